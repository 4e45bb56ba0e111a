//! Node and pod checks that read only files: PCI functions and their drivers in sysfs, IOMMU
//! groups, `/dev/vfio`, and the process's memlock limit, capabilities and environment in procfs.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::{Finding, Roots};

/// Intel's PCI vendor ID.
pub const INTEL_VENDOR: &str = "8086";
/// qatlib's DMA memory per VF: the memlock limit needed without CAP_IPC_LOCK, per VF.
pub const MEMLOCK_PER_VF: u64 = 16 * 1024 * 1024;
/// CAP_IPC_LOCK's bit in the capability sets of /proc/PID/status.
pub const CAP_IPC_LOCK_BIT: u32 = 14;

/// What a QAT PCI function is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QatModel {
    /// PCI device ID, lower-case hex without 0x.
    pub device_id: &'static str,
    /// Product family, e.g. "4xxx".
    pub family: &'static str,
    /// Whether this is a virtual function (what containers get) or a physical function.
    pub vf: bool,
    /// Gen4 and later: device plugin resources qat.intel.com/cy and /dc; before: /generic.
    pub gen4: bool,
}

const fn m(device_id: &'static str, family: &'static str, vf: bool, gen4: bool) -> QatModel {
    QatModel {
        device_id,
        family,
        vf,
        gen4,
    }
}

/// QAT PCI functions by device ID (vendor 8086): VFs as listed by the QAT device plugin, and
/// their PFs.
pub const QAT_MODELS: &[QatModel] = &[
    m("0442", "DH89xxCC", true, false),
    m("0443", "DH895xCC", true, false),
    m("37c9", "C62x", true, false),
    m("19e3", "C3xxx", true, false),
    m("6f55", "D15xx", true, false),
    m("18a1", "C4xxx", true, false),
    m("4941", "4xxx", true, true),
    m("4943", "401xx", true, true),
    m("4945", "402xx", true, true),
    m("4947", "420xx", true, true),
    m("4949", "6xxx", true, true),
    m("0434", "DH89xxCC", false, false),
    m("0435", "DH895xCC", false, false),
    m("37c8", "C62x", false, false),
    m("19e2", "C3xxx", false, false),
    m("6f54", "D15xx", false, false),
    m("18a0", "C4xxx", false, false),
    m("4940", "4xxx", false, true),
    m("4942", "401xx", false, true),
    m("4944", "402xx", false, true),
    m("4946", "420xx", false, true),
    m("4948", "6xxx", false, true),
];

/// Looks up a QAT model by PCI device ID (lower-case hex, no 0x).
pub fn qat_model(device_id: &str) -> Option<&'static QatModel> {
    QAT_MODELS.iter().find(|m| m.device_id == device_id)
}

/// One QAT PCI function found in sysfs.
#[derive(Clone, Debug)]
pub struct QatFunction {
    /// PCI address, e.g. 0000:6b:00.1.
    pub bdf: String,
    pub model: &'static QatModel,
    /// Bound kernel driver, if any.
    pub driver: Option<String>,
    /// IOMMU group number, if the function has one.
    pub iommu_group: Option<String>,
    /// For a VF: its PF's address.
    pub physfn: Option<String>,
    /// For a PF: qat/state ("up" / "down") where the driver exposes it.
    pub state: Option<String>,
    /// For a PF: qat/cfg_services (e.g. "sym;asym", "dc", "asym;dc") where exposed.
    pub cfg_services: Option<String>,
    /// For a PF: sriov_numvfs where exposed.
    pub numvfs: Option<u32>,
}

fn read_trim(p: &Path) -> Option<String> {
    fs::read_to_string(p).ok().map(|s| s.trim().to_owned())
}

fn link_name(p: &Path) -> Option<String> {
    fs::read_link(p)
        .ok()
        .and_then(|t| t.file_name().map(|n| n.to_string_lossy().into_owned()))
}

fn hex_id(s: &str) -> String {
    s.trim()
        .trim_start_matches("0x")
        .trim_start_matches("0X")
        .to_ascii_lowercase()
}

/// Every QAT PCI function under SYS/bus/pci/devices, sorted by address.
pub fn scan_pci(sys: &Path) -> Vec<QatFunction> {
    let dir = sys.join("bus/pci/devices");
    let Ok(entries) = fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let p = e.path();
        let Some(vendor) = read_trim(&p.join("vendor")) else {
            continue;
        };
        if hex_id(&vendor) != INTEL_VENDOR {
            continue;
        }
        let Some(device) = read_trim(&p.join("device")) else {
            continue;
        };
        let Some(model) = qat_model(&hex_id(&device)) else {
            continue;
        };
        out.push(QatFunction {
            bdf: e.file_name().to_string_lossy().into_owned(),
            model,
            driver: link_name(&p.join("driver")),
            iommu_group: link_name(&p.join("iommu_group")),
            physfn: link_name(&p.join("physfn")),
            state: read_trim(&p.join("qat/state")),
            cfg_services: read_trim(&p.join("qat/cfg_services")),
            numvfs: read_trim(&p.join("sriov_numvfs")).and_then(|s| s.parse().ok()),
        });
    }
    out.sort_by(|a, b| a.bdf.cmp(&b.bdf));
    out
}

/// Whether the path exists and this process may open it read-write (access(2)).
pub fn accessible_rw(p: &Path) -> bool {
    let Ok(c) = CString::new(p.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: `c` is a valid NUL-terminated path that outlives the call; access() only reads it.
    unsafe { libc::access(c.as_ptr(), libc::R_OK | libc::W_OK) == 0 }
}

/// The soft RLIMIT_MEMLOCK from PROC/self/limits: Some(None) = unlimited, None = unreadable.
pub fn memlock_limit(proc_root: &Path) -> Option<Option<u64>> {
    let text = fs::read_to_string(proc_root.join("self/limits")).ok()?;
    let line = text.lines().find(|l| l.starts_with("Max locked memory"))?;
    let soft = line["Max locked memory".len()..]
        .split_whitespace()
        .next()?;
    if soft == "unlimited" {
        Some(None)
    } else {
        soft.parse().ok().map(Some)
    }
}

/// The effective capability set (CapEff) from PROC/self/status.
pub fn cap_eff(proc_root: &Path) -> Option<u64> {
    let text = fs::read_to_string(proc_root.join("self/status")).ok()?;
    let v = text.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    u64::from_str_radix(v.trim(), 16).ok()
}

/// `QAT<n>=<PCI address>` variables set by the QAT device plugin, from PROC/self/environ.
pub fn device_plugin_env(proc_root: &Path) -> Option<Vec<(String, String)>> {
    let raw = fs::read(proc_root.join("self/environ")).ok()?;
    let mut v: Vec<(String, String)> = raw
        .split(|b| *b == 0)
        .filter_map(|kv| {
            let s = String::from_utf8_lossy(kv);
            let (k, val) = s.split_once('=')?;
            let n = k.strip_prefix("QAT")?;
            (!n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
                .then(|| (k.to_owned(), val.to_owned()))
        })
        .collect();
    v.sort();
    Some(v)
}

fn mib(n: u64) -> String {
    if n % (1024 * 1024) == 0 {
        format!("{} MiB", n / (1024 * 1024))
    } else {
        format!("{n} bytes")
    }
}

fn join(items: &[String], max: usize) -> String {
    if items.len() <= max {
        items.join(", ")
    } else {
        format!("{}, … ({} in all)", items[..max].join(", "), items.len())
    }
}

/// Whether the QAT library envoy-qat loads by default can drive these VFs. qatlib (Debian
/// trixie's libqat.so.4 is qatlib 24.02) supports Gen4 (4xxx, 401xx, 402xx) and 420xx;
/// 6xxx from qatlib 26.08; earlier devices (C62x, C3xxx, DH895xCC, D15xx, C4xxx) need
/// Intel's out-of-tree QAT driver package and its libraries, not qatlib.
fn check_qatlib_support(vfs: &[&QatFunction], out: &mut Vec<Finding>) {
    let mut old: Vec<String> = vfs
        .iter()
        .filter(|v| !v.model.gen4)
        .map(|v| format!("{} ({})", v.model.family, v.model.device_id))
        .collect();
    old.dedup();
    let gen6 = vfs.iter().any(|v| v.model.family == "6xxx");
    if !old.is_empty() {
        out.push(Finding::warn(
            "qatlib-support",
            format!(
                "{}: qatlib (libqat.so.4, which envoy-qat loads) supports 4xxx/401xx/402xx and 420xx only, so the private-key provider and QATzip see no device here and run in software",
                old.join(", ")
            ),
            "for C62x and older, install Intel's out-of-tree QAT driver package and point ENVOY_QAT_LIB / ENVOY_QAT_USDM_LIB (config qat_lib / usdm_lib) at its libqat_s.so / libusdm_drv_s.so; envoy-qat has not been tested with those libraries",
        ));
    } else if gen6 {
        out.push(Finding::warn(
            "qatlib-support",
            "6xxx VF(s): qatlib supports 6xxx from release 26.08; Debian trixie's libqat.so.4 is qatlib 24.02 and does not",
            "install qatlib 26.08 or later and point ENVOY_QAT_LIB_DIR (config qat_lib_dir) at it",
        ));
    } else {
        out.push(Finding::pass(
            "qatlib-support",
            "every QAT VF here is a device qatlib supports (4xxx/401xx/402xx, 420xx)",
        ));
    }
}

/// Runs every node/pod check, appending findings.
pub fn check_node(roots: &Roots, out: &mut Vec<Finding>) {
    let funcs = scan_pci(&roots.sys);
    let vfs: Vec<&QatFunction> = funcs.iter().filter(|f| f.model.vf).collect();
    let pfs: Vec<&QatFunction> = funcs.iter().filter(|f| !f.model.vf).collect();
    let pci_dir = roots.sys.join("bus/pci/devices");

    check_iommu(roots, out);

    // QAT PCI functions.
    if !vfs.is_empty() {
        let mut by_family: BTreeMap<String, usize> = BTreeMap::new();
        for v in &vfs {
            *by_family
                .entry(format!("{} ({})", v.model.family, v.model.device_id))
                .or_default() += 1;
        }
        let fams: Vec<String> = by_family
            .iter()
            .map(|(k, n)| format!("{n} × {k}"))
            .collect();
        let res = if vfs.iter().any(|v| v.model.gen4) {
            "device plugin resources qat.intel.com/cy and qat.intel.com/dc"
        } else {
            "device plugin resource qat.intel.com/generic"
        };
        out.push(Finding::pass(
            "qat-devices",
            format!(
                "{} QAT VF(s): {}; {} PF(s) visible; {res}",
                vfs.len(),
                fams.join(", "),
                pfs.len()
            ),
        ));
        check_qatlib_support(&vfs, out);
    } else if !pfs.is_empty() {
        let names: Vec<String> = pfs
            .iter()
            .map(|p| format!("{} ({})", p.bdf, p.model.family))
            .collect();
        out.push(Finding::fail(
            "qat-devices",
            format!(
                "QAT PF(s) {} but no VFs: SR-IOV is not enabled",
                join(&names, 4)
            ),
            format!(
                "enable VFs: echo 16 > {}/{}/sriov_numvfs (or deploy the QAT device plugin's initcontainer)",
                pci_dir.display(),
                pfs[0].bdf
            ),
        ));
    } else {
        out.push(Finding::fail(
            "qat-devices",
            format!(
                "no Intel QAT PCI function (vendor {INTEL_VENDOR}, VF IDs {}) under {}",
                QAT_MODELS
                    .iter()
                    .filter(|m| m.vf)
                    .map(|m| m.device_id)
                    .collect::<Vec<_>>()
                    .join(" "),
                pci_dir.display()
            ),
            "run on a node with a QAT device (4th Gen Xeon or a QAT card) with its PF driver loaded \
             (e.g. modprobe qat_4xxx); TLS still works in software with fallback: true",
        ));
    }

    // PF drivers, state and services.
    for pf in &pfs {
        match &pf.driver {
            Some(d) if d.starts_with("qat_") => {}
            other => out.push(Finding::fail(
                "pf-driver",
                format!(
                    "PF {} ({}) is bound to {}",
                    pf.bdf,
                    pf.model.family,
                    other.as_deref().unwrap_or("no driver")
                ),
                format!(
                    "load the in-tree QAT PF driver: modprobe qat_{}",
                    pf.model.family.to_ascii_lowercase()
                ),
            )),
        }
        if let Some(state) = &pf.state {
            if state != "up" {
                out.push(Finding::fail(
                    "qat-state",
                    format!("PF {} qat/state is {state}", pf.bdf),
                    format!("echo up > {}/{}/qat/state", pci_dir.display(), pf.bdf),
                ));
                continue;
            }
        }
        if let Some(svc) = &pf.cfg_services {
            let has = |s: &str| svc.split(';').any(|x| x.trim() == s);
            let mut lacks = Vec::new();
            if !has("asym") {
                lacks.push("asym (TLS private-key operations)");
            }
            if !has("dc") {
                lacks.push("dc (compression)");
            }
            let detail = format!(
                "PF {} state {} services {svc}",
                pf.bdf,
                pf.state.as_deref().unwrap_or("?")
            );
            let fix = format!(
                "echo down > {0}/{1}/qat/state; echo 'asym;dc' > {0}/{1}/qat/cfg_services; echo up > {0}/{1}/qat/state",
                pci_dir.display(),
                pf.bdf
            );
            match lacks.len() {
                0 => out.push(Finding::pass("qat-state", detail)),
                1 => out.push(Finding::warn(
                    "qat-state",
                    format!("{detail}: no {}", lacks[0]),
                    format!("if this node should do both: {fix}"),
                )),
                _ => out.push(Finding::fail(
                    "qat-state",
                    format!("{detail}: neither asym nor dc is enabled"),
                    fix,
                )),
            }
        }
    }

    // VF drivers: qatlib reaches VFs through vfio-pci only.
    if !vfs.is_empty() {
        let vfio: Vec<&&QatFunction> = vfs
            .iter()
            .filter(|v| v.driver.as_deref() == Some("vfio-pci"))
            .collect();
        let others: Vec<String> = vfs
            .iter()
            .filter(|v| v.driver.as_deref() != Some("vfio-pci"))
            .map(|v| format!("{}→{}", v.bdf, v.driver.as_deref().unwrap_or("none")))
            .collect();
        let fix = format!(
            "bind VFs to vfio-pci (the QAT device plugin does, with -dpdk-driver vfio-pci), or: \
             echo vfio-pci > {0}/BDF/driver_override; echo BDF > {0}/BDF/driver/unbind; echo BDF > /sys/bus/pci/drivers_probe",
            pci_dir.display()
        );
        if others.is_empty() {
            out.push(Finding::pass(
                "vf-driver",
                format!("all {} VF(s) bound to vfio-pci", vfs.len()),
            ));
        } else if vfio.is_empty() {
            out.push(Finding::fail(
                "vf-driver",
                format!("no VF is bound to vfio-pci: {}", join(&others, 4)),
                fix,
            ));
        } else {
            out.push(Finding::warn(
                "vf-driver",
                format!(
                    "{} VF(s) on vfio-pci; not usable by qatlib: {}",
                    vfio.len(),
                    join(&others, 4)
                ),
                fix,
            ));
        }
    }

    // IOMMU groups of the vfio-bound VFs: one device per group for isolation.
    let mut qat_groups: BTreeMap<String, String> = BTreeMap::new();
    for v in vfs
        .iter()
        .filter(|v| v.driver.as_deref() == Some("vfio-pci"))
    {
        match &v.iommu_group {
            Some(g) => {
                qat_groups.insert(g.clone(), v.bdf.clone());
            }
            None => out.push(Finding::fail(
                "iommu-groups",
                format!("VF {} has no iommu_group", v.bdf),
                "enable the IOMMU (intel_iommu=on) so vfio-pci can hand the VF to user space",
            )),
        }
    }
    if !qat_groups.is_empty() {
        let shared: Vec<String> = qat_groups
            .keys()
            .filter_map(|g| {
                let n = fs::read_dir(
                    roots
                        .sys
                        .join("kernel/iommu_groups")
                        .join(g)
                        .join("devices"),
                )
                .map(|d| d.count())
                .unwrap_or(1);
                (n > 1).then(|| format!("group {g} has {n} devices"))
            })
            .collect();
        if shared.is_empty() {
            out.push(Finding::pass(
                "iommu-groups",
                format!(
                    "{} QAT VF IOMMU group(s), one device each",
                    qat_groups.len()
                ),
            ));
        } else {
            out.push(Finding::warn(
                "iommu-groups",
                format!("shared IOMMU groups: {}", join(&shared, 4)),
                "a container gets whole groups: give each VF its own group (ACS-capable slot, or Gen4 VFs)",
            ));
        }
    }

    check_vfio(roots, &qat_groups, out);
    check_memlock_and_caps(roots, out);
    check_device_plugin_env(roots, &funcs, out);
}

fn check_iommu(roots: &Roots, out: &mut Vec<Finding>) {
    let groups = roots.sys.join("kernel/iommu_groups");
    let n = fs::read_dir(&groups).map(|d| d.count()).unwrap_or(0);
    if n > 0 {
        out.push(Finding::pass(
            "iommu",
            format!("IOMMU enabled: {n} groups under {}", groups.display()),
        ));
        return;
    }
    let cmdline = read_trim(&roots.proc.join("cmdline")).unwrap_or_default();
    let hint = if cmdline.split_whitespace().any(|w| w == "intel_iommu=on") {
        "intel_iommu=on is on the kernel command line: enable VT-d in the BIOS"
    } else {
        "kernel command line lacks intel_iommu=on"
    };
    out.push(Finding::fail(
        "iommu",
        format!("no IOMMU groups under {} ({hint})", groups.display()),
        "enable VT-d in the BIOS and add intel_iommu=on to GRUB_CMDLINE_LINUX, update-grub, reboot; \
         check with dmesg | grep IOMMU",
    ));
}

fn check_vfio(roots: &Roots, qat_groups: &BTreeMap<String, String>, out: &mut Vec<Finding>) {
    let vfio_dir = roots.dev.join("vfio");
    let ctl = vfio_dir.join("vfio");
    if !ctl.exists() {
        out.push(Finding::fail(
            "vfio",
            format!("{} does not exist", ctl.display()),
            "on a node: modprobe vfio-pci; in a pod: request a QAT resource (qat.intel.com/cy, /dc or /generic) so the device plugin passes /dev/vfio in",
        ));
        return;
    }
    if !accessible_rw(&ctl) {
        out.push(Finding::fail(
            "vfio",
            format!(
                "{} is not readable and writable by this process",
                ctl.display()
            ),
            "run as a user that may open /dev/vfio (in a pod the device plugin grants rw)",
        ));
        return;
    }
    let mut groups: Vec<String> = fs::read_dir(&vfio_dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| {
                    let g = n.strip_prefix("noiommu-").unwrap_or(n);
                    !g.is_empty() && g.bytes().all(|b| b.is_ascii_digit())
                })
                .collect()
        })
        .unwrap_or_default();
    groups.sort();
    if groups.is_empty() {
        out.push(Finding::fail(
            "vfio",
            format!("no VFIO group device in {}", vfio_dir.display()),
            "in a pod: request qat.intel.com/cy, /dc or /generic; on a node: bind the QAT VFs to vfio-pci",
        ));
        return;
    }
    let denied: Vec<String> = groups
        .iter()
        .filter(|g| !accessible_rw(&vfio_dir.join(g)))
        .cloned()
        .collect();
    if !denied.is_empty() {
        out.push(Finding::fail(
            "vfio",
            format!(
                "{} not readable and writable: {}",
                vfio_dir.display(),
                join(&denied, 6)
            ),
            "give this user rw on the group devices (udev rule or chown on the node; the device plugin does it in pods)",
        ));
        return;
    }
    let mut ours = Vec::new();
    for g in &groups {
        let num = g.strip_prefix("noiommu-").unwrap_or(g);
        if let Some(bdf) = qat_groups.get(num) {
            ours.push(format!("{g} ({bdf})"));
        }
    }
    if !qat_groups.is_empty() && ours.is_empty() {
        out.push(Finding::warn(
            "vfio",
            format!(
                "{} group(s) in {} ({}), none belongs to a QAT VF",
                groups.len(),
                vfio_dir.display(),
                join(&groups, 6)
            ),
            "request a QAT resource for this container, or bind the QAT VFs to vfio-pci",
        ));
    } else if ours.is_empty() {
        out.push(Finding::pass(
            "vfio",
            format!("{} accessible; groups {}", ctl.display(), join(&groups, 6)),
        ));
    } else {
        out.push(Finding::pass(
            "vfio",
            format!(
                "{} accessible; QAT VF groups {}",
                ctl.display(),
                join(&ours, 6)
            ),
        ));
    }
}

fn check_memlock_and_caps(roots: &Roots, out: &mut Vec<Finding>) {
    // VFIO DMA mappings count against RLIMIT_MEMLOCK unless the process has CAP_IPC_LOCK, so one
    // of the two suffices; without both qatlib cannot map its memory.
    let vf_count = fs::read_dir(roots.dev.join("vfio"))
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name() != "vfio")
                .count()
                .max(1)
        })
        .unwrap_or(1) as u64;
    let need = MEMLOCK_PER_VF * vf_count;
    let limit = memlock_limit(&roots.proc);
    let caps = cap_eff(&roots.proc);
    let ipc_lock = caps.map(|c| c & (1 << CAP_IPC_LOCK_BIT) != 0);
    let mem_ok = match limit {
        Some(None) => Some(true),
        Some(Some(n)) => Some(n >= need),
        None => None,
    };
    let limit_s = match limit {
        Some(None) => "unlimited".to_owned(),
        Some(Some(n)) => mib(n),
        None => "unknown".to_owned(),
    };
    let mem_fix = format!(
        "raise the memlock limit to at least {}: LimitMEMLOCK=134217728 in the container runtime's systemd drop-in \
         (envoy-config/k8s/containerd-memlock.conf), or ulimit -l outside containers",
        mib(need)
    );
    match (mem_ok, ipc_lock) {
        (Some(true), _) => out.push(Finding::pass(
            "memlock",
            format!(
                "RLIMIT_MEMLOCK {limit_s} ≥ {} ({vf_count} VF × 16 MiB)",
                mib(need)
            ),
        )),
        (Some(false), Some(true)) => out.push(Finding::warn(
            "memlock",
            format!(
                "RLIMIT_MEMLOCK {limit_s} < {}; CAP_IPC_LOCK lifts the limit for VFIO mappings",
                mib(need)
            ),
            mem_fix,
        )),
        (Some(false), _) => out.push(Finding::fail(
            "memlock",
            format!(
                "RLIMIT_MEMLOCK {limit_s} < {} ({vf_count} VF × 16 MiB) and no CAP_IPC_LOCK",
                mib(need)
            ),
            mem_fix,
        )),
        (None, _) => out.push(Finding::warn(
            "memlock",
            format!("cannot read {}", roots.proc.join("self/limits").display()),
            "mount procfs, or check ulimit -l by hand (needs ≥ 16 MiB per VF)",
        )),
    }
    let cap_fix = "add the capability: securityContext.capabilities.add: [IPC_LOCK]; for a non-root user \
                   Kubernetes sets no ambient capabilities, so also setcap cap_ipc_lock+ep on the binary \
                   (or run as root with other capabilities dropped)";
    match (ipc_lock, mem_ok) {
        (Some(true), _) => out.push(Finding::pass(
            "ipc-lock",
            "CAP_IPC_LOCK is in the effective capability set",
        )),
        (Some(false), Some(true)) => out.push(Finding::warn(
            "ipc-lock",
            format!("CAP_IPC_LOCK is not effective (CapEff {:016x}); the memlock limit covers qatlib for now", caps.unwrap_or(0)),
            cap_fix,
        )),
        (Some(false), _) => out.push(Finding::fail(
            "ipc-lock",
            format!(
                "CAP_IPC_LOCK is not in the effective set (CapEff {:016x}, bit {CAP_IPC_LOCK_BIT} clear)",
                caps.unwrap_or(0)
            ),
            cap_fix,
        )),
        (None, _) => out.push(Finding::warn(
            "ipc-lock",
            format!("cannot read CapEff from {}", roots.proc.join("self/status").display()),
            "mount procfs, or check capsh --print by hand",
        )),
    }
}

fn check_device_plugin_env(roots: &Roots, funcs: &[QatFunction], out: &mut Vec<Finding>) {
    let Some(env) = device_plugin_env(&roots.proc) else {
        return;
    };
    if env.is_empty() {
        out.push(Finding::warn(
            "device-plugin",
            "no QAT<n> variables: this process did not get VFs from the QAT device plugin",
            "in Kubernetes, request qat.intel.com/cy, /dc (Gen4) or /generic in resources.limits; on a bare node ignore this",
        ));
        return;
    }
    let known: Vec<&str> = funcs.iter().map(|f| f.bdf.as_str()).collect();
    let listed: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let missing: Vec<String> = env
        .iter()
        .filter(|(_, v)| !known.is_empty() && !known.contains(&v.as_str()))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    if missing.is_empty() {
        out.push(Finding::pass(
            "device-plugin",
            format!("allocated by the device plugin: {}", join(&listed, 6)),
        ));
    } else {
        out.push(Finding::warn(
            "device-plugin",
            format!(
                "device plugin variables name functions not in sysfs: {}",
                join(&missing, 6)
            ),
            "check the device plugin's allocation (kubectl describe node) and that sysfs is the host's",
        ));
    }
}
