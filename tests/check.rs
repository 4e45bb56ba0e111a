//! `envoy-qat check` against fabricated sysfs / dev / proc trees (a Gen4 4xxx VF in a pod, a
//! node with no QAT, a pod without IPC_LOCK, and one tree per failure), against Envoy configs,
//! and once against this machine.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_envoy-qat");
const PF: &str = "0000:6b:00.0";
const VF: &str = "0000:6b:00.1";
const VF2: &str = "0000:6b:00.2";
/// Docker's default capability set: no CAP_IPC_LOCK (bit 14).
const CAPS_DEFAULT: &str = "00000000a80425fb";
/// The same plus CAP_IPC_LOCK.
const CAPS_IPC_LOCK: &str = "00000000a80465fb";

fn write(p: &Path, s: &str) {
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, s).unwrap();
}

fn link(target: &str, at: &Path) {
    fs::create_dir_all(at.parent().unwrap()).unwrap();
    symlink(target, at).unwrap();
}

/// A fabricated root: ROOT/sys, ROOT/dev, ROOT/proc.
struct Tree {
    dir: tempfile::TempDir,
}

impl Tree {
    fn new() -> Self {
        let t = Tree {
            dir: tempfile::tempdir().unwrap(),
        };
        fs::create_dir_all(t.sys("bus/pci/devices")).unwrap();
        fs::create_dir_all(t.sys("kernel/iommu_groups")).unwrap();
        fs::create_dir_all(t.path().join("dev")).unwrap();
        t.proc(CAPS_IPC_LOCK, Some(134_217_728), &[]);
        write(
            &t.path().join("proc/cmdline"),
            "BOOT_IMAGE=/vmlinuz root=/dev/sda1 ro\n",
        );
        t
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn sys(&self, rel: &str) -> PathBuf {
        self.path().join("sys").join(rel)
    }

    /// /proc/self/{status,limits,environ}; memlock None = unlimited.
    fn proc(&self, cap_eff: &str, memlock: Option<u64>, env: &[&str]) {
        let p = self.path().join("proc/self");
        write(
            &p.join("status"),
            &format!(
                "Name:\tenvoy\nUmask:\t0022\nState:\tS (sleeping)\nUid:\t0\t0\t0\t0\n\
                 CapInh:\t0000000000000000\nCapPrm:\t{cap_eff}\nCapEff:\t{cap_eff}\n\
                 CapBnd:\t{cap_eff}\nCapAmb:\t0000000000000000\n"
            ),
        );
        let ml = memlock.map_or("unlimited".to_owned(), |n| n.to_string());
        write(
            &p.join("limits"),
            &format!(
                "Limit                     Soft Limit           Hard Limit           Units     \n\
                 Max cpu time              unlimited            unlimited            seconds   \n\
                 Max open files            1048576              1048576              files     \n\
                 Max locked memory         {ml:<20} {ml:<20} bytes     \n\
                 Max address space         unlimited            unlimited            bytes     \n"
            ),
        );
        let mut environ = b"PATH=/usr/local/bin:/usr/bin\0HOSTNAME=envoy-qat-7d9f\0".to_vec();
        for e in env {
            environ.extend_from_slice(e.as_bytes());
            environ.push(0);
        }
        fs::write(p.join("environ"), environ).unwrap();
    }

    /// A PCI function laid out like sysfs: the real directory under devices/pci0000:6b/, a
    /// bus/pci/devices symlink to it, driver and iommu_group symlinks.
    fn pci(&self, bdf: &str, device: &str, driver: Option<&str>, group: Option<&str>) -> PathBuf {
        let real = self.sys(&format!("devices/pci0000:6b/{bdf}"));
        write(&real.join("vendor"), "0x8086\n");
        write(&real.join("device"), &format!("0x{device}\n"));
        write(&real.join("class"), "0x0b4000\n");
        link(
            &format!("../../../devices/pci0000:6b/{bdf}"),
            &self.sys(&format!("bus/pci/devices/{bdf}")),
        );
        if let Some(d) = driver {
            fs::create_dir_all(self.sys(&format!("bus/pci/drivers/{d}"))).unwrap();
            link(
                &format!("../../../bus/pci/drivers/{d}"),
                &real.join("driver"),
            );
        }
        if let Some(g) = group {
            let gdir = self.sys(&format!("kernel/iommu_groups/{g}/devices"));
            fs::create_dir_all(&gdir).unwrap();
            link(
                &format!("../../../../devices/pci0000:6b/{bdf}"),
                &gdir.join(bdf),
            );
            link(
                &format!("../../../kernel/iommu_groups/{g}"),
                &real.join("iommu_group"),
            );
        }
        real
    }

    /// A 4xxx PF (qat_4xxx, state up, services asym;dc) with VFs bound to vfio-pci.
    fn gen4(&self, vfs: &[(&str, &str)]) {
        let pf = self.pci(PF, "4940", Some("qat_4xxx"), Some("11"));
        write(&pf.join("qat/state"), "up\n");
        write(&pf.join("qat/cfg_services"), "asym;dc\n");
        write(&pf.join("sriov_numvfs"), &format!("{}\n", vfs.len()));
        for (i, (bdf, group)) in vfs.iter().enumerate() {
            let vf = self.pci(bdf, "4941", Some("vfio-pci"), Some(group));
            link(&format!("../{PF}"), &vf.join("physfn"));
            link(&format!("../{bdf}"), &pf.join(format!("virtfn{i}")));
        }
    }

    /// /dev/vfio/vfio and the given group nodes (regular files stand in for the char devices).
    fn vfio(&self, groups: &[&str]) {
        let d = self.path().join("dev/vfio");
        write(&d.join("vfio"), "");
        for g in groups {
            write(&d.join(g), "");
        }
    }

    /// The pod a Gen4 VF was allocated to, ready for QAT.
    fn ready_pod() -> Self {
        let t = Tree::new();
        t.gen4(&[(VF, "12"), (VF2, "13")]);
        t.vfio(&["12"]);
        t.proc(CAPS_IPC_LOCK, Some(134_217_728), &[&format!("QAT0={VF}")]);
        t
    }

    fn check(&self, extra: &[&str]) -> Output {
        let mut c = Command::new(BIN);
        c.arg("check").arg("--root").arg(self.path());
        c.args(extra);
        c.output().unwrap()
    }
}

fn json_report(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// The status of the first finding named `check` whose detail contains `needle`.
fn status_of(report: &Value, check: &str, needle: &str) -> String {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == check && c["detail"].as_str().unwrap().contains(needle))
        .map(|c| c["status"].as_str().unwrap().to_owned())
        .unwrap_or_else(|| panic!("no {check} finding with {needle:?} in {report:#}"))
}

fn statuses(report: &Value, check: &str) -> Vec<String> {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["check"] == check)
        .map(|c| c["status"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn gen4_vf_pod_is_ready() {
    let t = Tree::ready_pod();
    let out = t.check(&["--json"]);
    let r = json_report(&out);
    assert_eq!(out.status.code(), Some(0), "{r:#}");
    assert_eq!(r["ready"], true);
    assert_eq!(r["summary"]["fail"], 0);
    assert_eq!(
        status_of(&r, "qat-devices", "2 QAT VF(s): 2 × 4xxx (4941)"),
        "pass"
    );
    assert_eq!(status_of(&r, "qat-devices", "qat.intel.com/cy"), "pass");
    assert_eq!(status_of(&r, "iommu", "IOMMU enabled"), "pass");
    assert_eq!(status_of(&r, "qat-state", "services asym;dc"), "pass");
    assert_eq!(
        status_of(&r, "vf-driver", "all 2 VF(s) bound to vfio-pci"),
        "pass"
    );
    assert_eq!(status_of(&r, "iommu-groups", "one device each"), "pass");
    assert_eq!(status_of(&r, "vfio", &format!("12 ({VF})")), "pass");
    assert_eq!(status_of(&r, "memlock", "128 MiB ≥ 16 MiB"), "pass");
    assert_eq!(status_of(&r, "ipc-lock", "effective"), "pass");
    assert_eq!(
        status_of(&r, "device-plugin", &format!("QAT0={VF}")),
        "pass"
    );
    // qatlib and QATzip from the directory this build was compiled against (real trixie .so files).
    for lib in ["libusdm.so.0", "libqat.so.4", "libqatzip.so.3"] {
        assert_eq!(statuses(&r, &format!("lib {lib}")), ["pass"], "{r:#}");
    }
    // Text output says the same.
    let text = t.check(&[]);
    let s = String::from_utf8(text.stdout).unwrap();
    assert!(s.contains("ready for QAT"), "{s}");
    assert!(!s.contains("FAIL"), "{s}");
}

#[test]
fn node_without_qat_is_not_ready_with_reasons() {
    let t = Tree::new();
    let out = t.check(&["--json"]);
    let r = json_report(&out);
    assert_eq!(out.status.code(), Some(1), "{r:#}");
    assert_eq!(r["ready"], false);
    assert_eq!(
        status_of(&r, "qat-devices", "no Intel QAT PCI function"),
        "fail"
    );
    assert_eq!(status_of(&r, "iommu", "lacks intel_iommu=on"), "fail");
    assert_eq!(status_of(&r, "vfio", "does not exist"), "fail");
    // Every failure carries a fix.
    for c in r["checks"].as_array().unwrap() {
        if c["status"] != "pass" {
            assert!(c["fix"].as_str().is_some_and(|f| !f.is_empty()), "{c}");
        }
    }
    let text = String::from_utf8(t.check(&[]).stdout).unwrap();
    assert!(text.contains("NOT ready for QAT"), "{text}");
    assert!(text.contains("fix: enable VT-d"), "{text}");
}

#[test]
fn pod_without_ipc_lock_and_default_memlock_is_not_ready() {
    let t = Tree::ready_pod();
    t.proc(CAPS_DEFAULT, Some(65_536), &[&format!("QAT0={VF}")]);
    let out = t.check(&["--json"]);
    let r = json_report(&out);
    assert_eq!(out.status.code(), Some(1), "{r:#}");
    assert_eq!(status_of(&r, "ipc-lock", "bit 14 clear"), "fail");
    assert_eq!(status_of(&r, "memlock", "65536 bytes < 16 MiB"), "fail");
    assert_eq!(r["summary"]["fail"], 2, "{r:#}");
    let fix = r["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == "ipc-lock")
        .unwrap()["fix"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(fix.contains("capabilities.add: [IPC_LOCK]"), "{fix}");
}

#[test]
fn ipc_lock_or_enough_memlock_alone_only_warns() {
    // Enough memlock, no IPC_LOCK: VFIO mappings fit in the limit.
    let t = Tree::ready_pod();
    t.proc(CAPS_DEFAULT, None, &[&format!("QAT0={VF}")]);
    let out = t.check(&["--json"]);
    let r = json_report(&out);
    assert_eq!(out.status.code(), Some(0), "{r:#}");
    assert_eq!(status_of(&r, "ipc-lock", "not effective"), "warn");
    assert_eq!(status_of(&r, "memlock", "unlimited"), "pass");
    // IPC_LOCK, low memlock: the capability lifts the limit.
    t.proc(CAPS_IPC_LOCK, Some(8 << 20), &[&format!("QAT0={VF}")]);
    let r = json_report(&t.check(&["--json"]));
    assert_eq!(status_of(&r, "memlock", "8 MiB < 16 MiB"), "warn");
    assert_eq!(r["ready"], true);
}

#[test]
fn memlock_need_scales_with_allocated_vfs() {
    let t = Tree::ready_pod();
    t.vfio(&["12", "13"]);
    t.proc(CAPS_DEFAULT, Some(16 << 20), &[&format!("QAT0={VF}")]);
    let r = json_report(&t.check(&["--json"]));
    assert_eq!(status_of(&r, "memlock", "16 MiB < 32 MiB (2 VF"), "fail");
}

#[test]
fn vf_on_kernel_driver_fails_with_vfio_fix() {
    let t = Tree::new();
    let pf = t.pci(PF, "4940", Some("qat_4xxx"), Some("11"));
    write(&pf.join("qat/state"), "up\n");
    write(&pf.join("qat/cfg_services"), "sym;asym\n");
    let vf = t.pci(VF, "4941", Some("4xxxvf"), Some("12"));
    link(&format!("../{PF}"), &vf.join("physfn"));
    t.vfio(&[]);
    let out = t.check(&["--json"]);
    let r = json_report(&out);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(status_of(&r, "vf-driver", &format!("{VF}→4xxxvf")), "fail");
    assert_eq!(status_of(&r, "vfio", "no VFIO group device"), "fail");
    // sym;asym: crypto only, compression missing is a warning.
    assert_eq!(status_of(&r, "qat-state", "no dc (compression)"), "warn");
}

#[test]
fn pf_without_vfs_and_down_state_fail() {
    let t = Tree::new();
    let pf = t.pci(PF, "4940", Some("qat_4xxx"), Some("11"));
    write(&pf.join("qat/state"), "down\n");
    write(&pf.join("qat/cfg_services"), "asym;dc\n");
    write(&pf.join("sriov_numvfs"), "0\n");
    let r = json_report(&t.check(&["--json"]));
    assert_eq!(
        status_of(&r, "qat-devices", "no VFs: SR-IOV is not enabled"),
        "fail"
    );
    assert_eq!(status_of(&r, "qat-state", "qat/state is down"), "fail");
    let fix = r["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == "qat-devices")
        .unwrap()["fix"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(fix.contains(&format!("{PF}/sriov_numvfs")), "{fix}");
}

#[test]
fn pf_without_driver_and_pre_gen4_vf() {
    let t = Tree::new();
    t.pci("0000:3d:00.0", "37c8", None, None);
    t.pci("0000:3d:01.0", "37c9", Some("vfio-pci"), Some("40"));
    t.vfio(&["40"]);
    let r = json_report(&t.check(&["--json"]));
    assert_eq!(status_of(&r, "pf-driver", "no driver"), "fail");
    assert_eq!(status_of(&r, "qat-devices", "C62x (37c9)"), "pass");
    assert_eq!(
        status_of(&r, "qat-devices", "qat.intel.com/generic"),
        "pass"
    );
}

#[test]
fn shared_iommu_group_warns_and_foreign_vfio_group_warns() {
    let t = Tree::ready_pod();
    // Another device in the VF's group.
    let other = t.sys("devices/pci0000:6b/0000:6b:00.7");
    fs::create_dir_all(&other).unwrap();
    link(
        "../../../../devices/pci0000:6b/0000:6b:00.7",
        &t.sys("kernel/iommu_groups/12/devices/0000:6b:00.7"),
    );
    // The pod holds a group that is no QAT VF's.
    fs::remove_file(t.path().join("dev/vfio/12")).unwrap();
    t.vfio(&["77"]);
    let r = json_report(&t.check(&["--json"]));
    assert_eq!(
        status_of(&r, "iommu-groups", "group 12 has 2 devices"),
        "warn"
    );
    assert_eq!(status_of(&r, "vfio", "none belongs to a QAT VF"), "warn");
}

/// `envoy-qat check --json` on `tree` as the unprivileged user nobody (65534, no groups, no
/// capabilities) when this test runs as root, as CI does: `setpriv` drops root before the
/// binary starts. Run directly otherwise.
fn check_unprivileged(tree: &Tree) -> Output {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return tree.check(&["--json"]);
    }
    let drop_root = ["--reuid=65534", "--regid=65534", "--clear-groups"];
    // setpriv (util-linux) must be there: without it the unprivileged case would not run.
    let id = Command::new("setpriv")
        .args(drop_root)
        .args(["id", "-u"])
        .output()
        .expect("setpriv (util-linux) runs the check as an unprivileged user; install it");
    assert_eq!(
        String::from_utf8_lossy(&id.stdout).trim(),
        "65534",
        "{id:?}"
    );
    Command::new("setpriv")
        .args(drop_root)
        .arg(BIN)
        .arg("check")
        .arg("--root")
        .arg(tree.path())
        .arg("--json")
        .output()
        .unwrap()
}

#[test]
fn unreadable_vfio_group_fails_for_unprivileged_users() {
    use std::os::unix::fs::PermissionsExt;
    // access(2) ignores mode bits for root, so this runs the check as an unprivileged user
    // (see check_unprivileged) whoever runs the test.
    let t = Tree::ready_pod();
    let mode = |p: &Path, m: u32| fs::set_permissions(p, fs::Permissions::from_mode(m)).unwrap();
    // The tempdir is 0700: let the unprivileged user reach the tree; the container's
    // /dev/vfio/vfio is 0666.
    mode(t.path(), 0o755);
    let ctl = t.path().join("dev/vfio/vfio");
    let g = t.path().join("dev/vfio/12");
    mode(&ctl, 0o666);
    // Control: the same tree with the group device open to everyone passes, so a failure
    // below is the group's mode bits and nothing else the user cannot reach.
    mode(&g, 0o666);
    let r = json_report(&check_unprivileged(&t));
    assert_eq!(status_of(&r, "vfio", "accessible"), "pass", "{r:#}");
    mode(&g, 0o000);
    let r = json_report(&check_unprivileged(&t));
    assert_eq!(status_of(&r, "vfio", "not readable and writable"), "fail");
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        // Root still passes: the check asks the kernel, not the mode bits.
        let r = json_report(&t.check(&["--json"]));
        assert_eq!(status_of(&r, "vfio", "accessible"), "pass");
    }
}

#[test]
fn device_plugin_env_absent_warns() {
    let t = Tree::ready_pod();
    t.proc(CAPS_IPC_LOCK, Some(134_217_728), &[]);
    let r = json_report(&t.check(&["--json"]));
    assert_eq!(
        status_of(&r, "device-plugin", "no QAT<n> variables"),
        "warn"
    );
    t.proc(CAPS_IPC_LOCK, Some(134_217_728), &["QAT0=0000:99:00.1"]);
    let r = json_report(&t.check(&["--json"]));
    assert_eq!(status_of(&r, "device-plugin", "not in sysfs"), "warn");
}

#[test]
fn libraries_missing_from_an_empty_dir_fail() {
    let t = Tree::ready_pod();
    let empty = tempfile::tempdir().unwrap();
    let out = t.check(&[
        "--json",
        "--no-system-libs",
        "--lib-dir",
        empty.path().to_str().unwrap(),
    ]);
    let r = json_report(&out);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(status_of(&r, "lib libqat.so.4", "not found in"), "fail");
    let fix = r["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == "lib libqat.so.4")
        .unwrap()["fix"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(fix.contains("libqat4"), "{fix}");
    // A file that is not a shared object is found but does not load.
    fs::write(empty.path().join("libusdm.so.0"), b"not an ELF file").unwrap();
    let r = json_report(&t.check(&[
        "--json",
        "--no-system-libs",
        "--lib-dir",
        empty.path().to_str().unwrap(),
    ]));
    assert_eq!(status_of(&r, "lib libusdm.so.0", "does not load"), "fail");
}

#[test]
fn usage_errors_exit_2() {
    let out = Command::new(BIN)
        .args(["check", "--root", "/nonexistent/envoy-qat-root"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a directory"));
    let out = Command::new(BIN)
        .args(["check", "--no-such-flag"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = Command::new(BIN)
        .args(["check", "--config-only"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = Command::new(BIN)
        .args([
            "check",
            "--config-only",
            "--envoy-config",
            "/nonexistent/envoy.yaml",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/envoy.yaml"));
}

#[test]
fn this_machine_has_no_qat_and_says_why() {
    // One run against the real /sys, /dev and /proc: this machine has no QAT device.
    let out = Command::new(BIN)
        .args(["check", "--json"])
        .output()
        .unwrap();
    let r = json_report(&out);
    let has_qat = r["checks"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["check"] == "qat-devices" && c["status"] == "pass");
    if has_qat {
        eprintln!("this machine has a QAT device; report: {r:#}");
        return;
    }
    assert_eq!(out.status.code(), Some(1), "{r:#}");
    assert_eq!(r["ready"], false);
    assert_eq!(status_of(&r, "qat-devices", "/sys/bus/pci/devices"), "fail");
    let text = String::from_utf8(Command::new(BIN).arg("check").output().unwrap().stdout).unwrap();
    assert!(text.contains("NOT ready for QAT"), "{text}");
    assert!(text.contains("no Intel QAT PCI function"), "{text}");
}

// ---------------------------------------------------------------------------------------------
// --envoy-config

fn openssl_key(dir: &Path, name: &str, args: &[&str]) -> PathBuf {
    let p = dir.join(name);
    let st = Command::new("openssl")
        .args(["genpkey", "-out"])
        .arg(&p)
        .args(args)
        .status()
        .unwrap();
    assert!(st.success());
    p
}

fn config_check(dir: &Path, yaml: &str) -> (Option<i32>, Value) {
    let f = dir.join("envoy.yaml");
    fs::write(&f, yaml).unwrap();
    let out = Command::new(BIN)
        .args(["check", "--config-only", "--json", "--envoy-config"])
        .arg(&f)
        .output()
        .unwrap();
    (out.status.code(), json_report(&out))
}

fn tls_yaml(cert_extra: &str, provider: &str) -> String {
    format!(
        r#"static_resources:
  listeners:
  - name: l
    filter_chains:
    - transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          common_tls_context:
            tls_certificates:
            - certificate_chain: {{ filename: /etc/envoy/tls/server.crt }}
{cert_extra}              private_key_provider:
{provider}"#
    )
}

fn provider(key: &Path, poll_delay: &str, fallback: &str) -> String {
    format!(
        r#"                provider_name: qat
                typed_config:
                  "@type": type.googleapis.com/envoy.extensions.private_key_providers.qat.v3alpha.QatPrivateKeyMethodConfig
                  private_key: {{ filename: {} }}
                  poll_delay: {poll_delay}
{fallback}"#,
        key.display()
    )
}

#[test]
fn envoy_config_with_rsa_and_ecdsa_keys_passes() {
    let d = tempfile::tempdir().unwrap();
    let rsa = openssl_key(
        d.path(),
        "rsa.key",
        &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
    );
    let ec = openssl_key(
        d.path(),
        "ec.key",
        &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"],
    );
    let fb = "                fallback: true\n";
    let yaml = format!(
        "{}            - certificate_chain: {{ filename: /etc/envoy/tls/ec.crt }}\n              private_key: {{ filename: {} }}\n              private_key_provider:\n{}",
        tls_yaml(
            &format!("              private_key: {{ filename: {} }}\n", rsa.display()),
            &provider(&rsa, "0.002s", fb)
        ),
        ec.display(),
        provider(&ec, "{ nanos: 5000000 }", fb)
    );
    let (code, r) = config_check(d.path(), &yaml);
    assert_eq!(code, Some(0), "{r:#}");
    assert_eq!(status_of(&r, "envoy-config", "RSA-2048 key from"), "pass");
    assert_eq!(status_of(&r, "envoy-config", "EC P-384 key from"), "pass");
    assert_eq!(status_of(&r, "envoy-config", "poll_delay 5ms"), "pass");
    assert_eq!(
        statuses(&r, "envoy-config")
            .iter()
            .filter(|s| *s == "pass")
            .count(),
        4,
        "{r:#}"
    );
}

#[test]
fn the_seeds_snippet_fails_with_both_mistakes_named() {
    let d = tempfile::tempdir().unwrap();
    let key = openssl_key(
        d.path(),
        "server-key.pem",
        &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
    );
    // The guide's snippet as published (only the key path changed).
    let yaml = format!(
        r#"  transport_socket:
    name: envoy.transport_sockets.tls
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
      common_tls_context:
        tls_certificates:
        certificate_chain:
          filename: "/home/hejiexu/cert/server.pem"
        private_key_provider:
            provider_name: qat
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.private_key_providers.qat.v3alpha.QatPrivateKeyMethodConfig
              private_key:
                filename: "{}"
                poll_delay:
                  nanos: 5000000
"#,
        key.display()
    );
    let (code, r) = config_check(d.path(), &yaml);
    assert_eq!(code, Some(1), "{r:#}");
    assert_eq!(
        status_of(&r, "envoy-config", "sit beside tls_certificates"),
        "fail"
    );
    assert_eq!(
        status_of(&r, "envoy-config", "poll_delay is nested under private_key"),
        "fail"
    );
}

#[test]
fn provider_field_errors_fail() {
    let d = tempfile::tempdir().unwrap();
    let key = openssl_key(
        d.path(),
        "k.pem",
        &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
    );
    let plain = format!(
        "              private_key: {{ filename: {} }}\n",
        key.display()
    );
    let fb = "                fallback: true\n";
    let cases: Vec<(String, &str, &str)> = vec![
        (
            tls_yaml(&plain, &provider(&key, "0.0005s", fb)),
            "fail",
            "below the minimum of 1 ms",
        ),
        (
            tls_yaml(&plain, &provider(&key, "2ms", fb)),
            "fail",
            "must be seconds ending in `s`",
        ),
        (
            tls_yaml(
                &plain,
                &provider(&d.path().join("missing.pem"), "0.002s", fb),
            ),
            "fail",
            "missing.pem: cannot read",
        ),
        (
            tls_yaml("", &provider(&key, "0.002s", fb)),
            "fail",
            "fallback: true but no private_key",
        ),
        (
            tls_yaml(&plain, &provider(&key, "0.002s", "")),
            "warn",
            "without fallback: true",
        ),
        (
            tls_yaml(
                &plain,
                &provider(&key, "0.002s", fb)
                    .replace("provider_name: qat", "provider_name: cryptomb"),
            ),
            "fail",
            "provider_name is `cryptomb`",
        ),
        (
            tls_yaml(
                &plain,
                &provider(&key, "0.002s", fb).replace("poll_delay:", "poll_dela:"),
            ),
            "fail",
            "unknown field `poll_dela`",
        ),
    ];
    for (yaml, want, needle) in cases {
        let (code, r) = config_check(d.path(), &yaml);
        assert_eq!(status_of(&r, "envoy-config", needle), want, "{yaml}\n{r:#}");
        assert_eq!(code, Some(if r["summary"]["fail"] == 0 { 0 } else { 1 }));
    }
    // A config with neither a provider nor a compressor only warns.
    let (code, r) = config_check(d.path(), "static_resources: {}\n");
    assert_eq!(code, Some(0));
    assert_eq!(
        status_of(&r, "envoy-config", "no qat private key provider"),
        "warn"
    );
    // Not YAML.
    let (code, r) = config_check(d.path(), "a: [1, 2\n");
    assert_eq!(code, Some(1));
    assert_eq!(status_of(&r, "envoy-config", "not YAML"), "fail");
}

#[test]
fn inline_key_data_sources_load() {
    let d = tempfile::tempdir().unwrap();
    let key = openssl_key(
        d.path(),
        "k.pem",
        &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
    );
    let pem = fs::read_to_string(&key).unwrap();
    let indented: String = pem
        .lines()
        .map(|l| format!("                      {l}\n"))
        .collect();
    let yaml = format!(
        r#"tls_certificate:
  certificate_chain: {{ filename: /etc/envoy/tls/server.crt }}
  private_key: {{ filename: {} }}
  private_key_provider:
    provider_name: qat
    fallback: true
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.private_key_providers.qat.v3alpha.QatPrivateKeyMethodConfig
      poll_delay: 1s
      private_key:
                    inline_string: |
{indented}"#,
        key.display()
    );
    let (code, r) = config_check(d.path(), &yaml);
    assert_eq!(code, Some(0), "{r:#}");
    assert_eq!(
        status_of(&r, "envoy-config", "private_key.inline_string"),
        "pass"
    );
    // The report never carries key material.
    assert!(!r.to_string().contains("PRIVATE KEY"), "{r}");
}

fn qatzip_yaml(fields: &str) -> String {
    format!(
        r#"http_filters:
- name: envoy.filters.http.compressor
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.filters.http.compressor.v3.Compressor
    compressor_library:
      name: qatzip
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.compression.qatzip.compressor.v3alpha.Qatzip
{fields}"#
    )
}

#[test]
fn qatzip_ranges_are_upstreams() {
    let d = tempfile::tempdir().unwrap();
    let ok = [
        "        compression_level: 1\n        chunk_size: 4096\n",
        "        compression_level: 9\n        chunk_size: 65536\n        input_size_threshold: 128\n",
        "        hardware_buffer_size: SZ_512K\n        stream_buffer_size: 2092032\n        input_size_threshold: 524288\n",
        "        hardware_buffer_size: 2\n        stream_buffer_size: '1024'\n",
        "",
    ];
    for f in ok {
        let (code, r) = config_check(d.path(), &qatzip_yaml(f));
        assert_eq!(code, Some(0), "{f}\n{r:#}");
        assert_eq!(statuses(&r, "envoy-config"), ["pass"], "{f}");
    }
    let bad = [
        (
            "        compression_level: 0\n",
            "compression_level: 0 is out of range: must be between 1 and 9",
        ),
        ("        compression_level: 10\n", "compression_level: 10"),
        ("        chunk_size: 4095\n", "chunk_size: 4095"),
        ("        chunk_size: 65537\n", "chunk_size: 65537"),
        (
            "        input_size_threshold: 127\n",
            "input_size_threshold: 127",
        ),
        (
            "        input_size_threshold: 524289\n",
            "input_size_threshold: 524289",
        ),
        (
            "        stream_buffer_size: 1023\n",
            "stream_buffer_size: 1023",
        ),
        (
            "        stream_buffer_size: 2092033\n",
            "stream_buffer_size: 2092033",
        ),
        (
            "        hardware_buffer_size: SZ_16K\n",
            "hardware_buffer_size: \"SZ_16K\"",
        ),
        (
            "        hardware_buffer_size: 7\n",
            "hardware_buffer_size: 7",
        ),
        (
            "        compression_level: -1\n",
            "expected a non-negative integer",
        ),
        ("        level: 5\n", "unknown field \"level\""),
    ];
    for (f, needle) in bad {
        let (code, r) = config_check(d.path(), &qatzip_yaml(f));
        assert_eq!(code, Some(1), "{f}\n{r:#}");
        assert_eq!(status_of(&r, "envoy-config", needle), "fail", "{f}");
    }
}

#[test]
fn qatzip_check_is_one_swappable_function() {
    use envoy_qat::check::envoy::check_qatzip_config;
    let v: Value = serde_json::json!({
        "@type": "type.googleapis.com/envoy.extensions.compression.qatzip.compressor.v3alpha.Qatzip",
        "compression_level": 6,
        "hardware_buffer_size": "SZ_64K",
    });
    assert_eq!(
        check_qatzip_config(&v).unwrap(),
        "compression_level 6, hardware_buffer_size SZ_64K"
    );
    assert!(check_qatzip_config(&serde_json::json!({"chunk_size": 1})).is_err());
}

#[test]
fn vfio_vf_without_iommu_group_fails() {
    let t = Tree::new();
    let pf = t.pci(PF, "4940", Some("qat_4xxx"), Some("11"));
    write(&pf.join("qat/state"), "up\n");
    write(&pf.join("qat/cfg_services"), "asym;dc\n");
    let vf = t.pci(VF, "4941", Some("vfio-pci"), None);
    link(&format!("../{PF}"), &vf.join("physfn"));
    t.vfio(&[]);
    let r = json_report(&t.check(&["--json"]));
    assert_eq!(status_of(&r, "iommu-groups", "has no iommu_group"), "fail");
}

#[test]
fn durations_parse_like_envoy() {
    use envoy_qat::check::envoy::parse_duration;
    use serde_json::json;
    use std::time::Duration;
    assert_eq!(
        parse_duration(&json!("0.002s")).unwrap(),
        Duration::from_millis(2)
    );
    assert_eq!(
        parse_duration(&json!("1s")).unwrap(),
        Duration::from_secs(1)
    );
    assert_eq!(
        parse_duration(&json!(".5s")).unwrap(),
        Duration::from_millis(500)
    );
    assert_eq!(
        parse_duration(&json!("0.000000001s")).unwrap(),
        Duration::from_nanos(1)
    );
    assert_eq!(
        parse_duration(&json!({"nanos": 5_000_000})).unwrap(),
        Duration::from_millis(5)
    );
    assert_eq!(
        parse_duration(&json!({"seconds": "2", "nanos": 1})).unwrap(),
        Duration::new(2, 1)
    );
    for bad in [
        json!("2ms"),
        json!("2"),
        json!("s"),
        json!("-1s"),
        json!("0.0000000001s"),
        json!(5),
        json!({"nanos": 1_000_000_000}),
        json!({"seconds": -1}),
        json!({"millis": 5}),
    ] {
        assert!(parse_duration(&bad).is_err(), "{bad} parsed");
    }
}

#[test]
fn probe_starts_the_real_qatlib_and_qatzip() {
    // The real trixie libqat/libqatzip: on this machine (no device) icp_sal_userStart fails and
    // a hardware-only QATzip session is refused; on a QAT node both would pass.
    let t = Tree::ready_pod();
    let out = t.check(&["--json", "--probe"]);
    let r = json_report(&out);
    let cy = statuses(&r, "probe cy");
    let dc = statuses(&r, "probe dc");
    assert_eq!(cy.len(), 1, "{r:#}");
    assert_eq!(dc.len(), 1, "{r:#}");
    if cy[0] == "fail" {
        assert_eq!(
            status_of(&r, "probe cy", "icp_sal_userStart(\"SSL\") returned"),
            "fail"
        );
        assert_eq!(out.status.code(), Some(1));
    } else {
        assert_eq!(status_of(&r, "probe cy", "crypto instance(s)"), "pass");
    }
    if dc[0] == "fail" {
        assert_eq!(
            status_of(&r, "probe dc", "no QAT compression hardware"),
            "fail"
        );
    }
    // Without --probe nothing is started.
    let r = json_report(&t.check(&["--json"]));
    assert!(statuses(&r, "probe cy").is_empty());
}

#[test]
fn per_tree_root_flags_match_root() {
    let t = Tree::ready_pod();
    let p = t.path();
    let out = Command::new(BIN)
        .args(["check", "--json", "--sysfs-root"])
        .arg(p.join("sys"))
        .arg("--dev-root")
        .arg(p.join("dev"))
        .arg("--proc-root")
        .arg(p.join("proc"))
        .output()
        .unwrap();
    let split = json_report(&out);
    let whole = json_report(&t.check(&["--json"]));
    assert_eq!(out.status.code(), Some(0), "{split:#}");
    assert_eq!(split, whole);
    // A per-tree flag overrides --root: an empty proc tree loses the memlock reading.
    let empty = tempfile::tempdir().unwrap();
    let r = json_report(&t.check(&["--json", "--proc-root", empty.path().to_str().unwrap()]));
    assert_eq!(status_of(&r, "memlock", "cannot read"), "warn");
}
