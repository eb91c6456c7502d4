//! The shipped deployment files say what the docs say they do: the
//! Kubernetes manifests (native sidecar, probes, volumes, ports, scrape
//! annotations, a config consistent with its mounts), the Prometheus scrape
//! snippet, and the Dockerfile.

use crate::support as common;

use std::path::{Path, PathBuf};

use serde_norway::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every YAML document of every `*.yaml` file in `dir`.
fn documents(dir: &Path) -> Vec<Value> {
    let mut out = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        for doc in serde_norway::Deserializer::from_str(&text) {
            let v: Value = serde::Deserialize::deserialize(doc)
                .unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            out.push(v);
        }
    }
    out
}

fn by_kind_name<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

fn named<'a>(list: &'a Value, name: &str) -> &'a Value {
    list.as_sequence()
        .and_then(|s| s.iter().find(|x| x["name"] == name))
        .unwrap_or_else(|| panic!("no entry named {name} in {list:?}"))
}

fn str_of(v: &Value) -> &str {
    v.as_str().unwrap_or_else(|| panic!("not a string: {v:?}"))
}

/// The mount path of volume `volume` in `container`.
fn mount<'a>(container: &'a Value, volume: &str) -> &'a str {
    str_of(&named(&container["volumeMounts"], volume)["mountPath"])
}

/// The docs' section that starts with `heading` (in `docs/PAGE`), up to
/// the next `## `.
fn readme_section(page: &str, heading: &str) -> String {
    let text = std::fs::read_to_string(root().join("docs").join(page)).unwrap();
    let start = text
        .find(heading)
        .unwrap_or_else(|| panic!("docs/{page} has no {heading:?}"));
    let rest = &text[start + heading.len()..];
    rest[..rest.find("\n## ").unwrap_or(rest.len())].to_string()
}

#[test]
fn kubernetes_native_sidecar_with_probes_volumes_and_ports() {
    let docs = documents(&root().join("deploy/kubernetes"));
    let deploy = by_kind_name(&docs, "Deployment", "web");
    let pod = &deploy["spec"]["template"];
    let spec = &pod["spec"];
    assert_eq!(spec["shareProcessNamespace"], true);

    let rekey = named(&spec["initContainers"], "rekey");
    assert_eq!(rekey["restartPolicy"], "Always", "native sidecar");
    let port = named(&rekey["ports"], "rekey-http");
    assert_eq!(port["containerPort"], 9464);
    for (probe, path) in [
        ("startupProbe", "/readyz"),
        ("readinessProbe", "/readyz"),
        ("livenessProbe", "/healthz"),
    ] {
        let get = &rekey[probe]["httpGet"];
        assert_eq!(get["path"], path, "{probe}");
        assert_eq!(get["port"], "rekey-http", "{probe}");
    }
    assert_eq!(rekey["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(rekey["securityContext"]["allowPrivilegeEscalation"], false);

    // One emptyDir holds the credentials for both containers; the app only reads it.
    let app = named(&spec["containers"], "app");
    let tls = named(&spec["volumes"], "tls");
    assert!(tls["emptyDir"].is_mapping(), "{tls:?}");
    assert_eq!(named(&app["volumeMounts"], "tls")["readOnly"], true);
    let app_tls = mount(app, "tls");
    let rekey_tls = mount(rekey, "tls");

    // Prometheus annotations point at the endpoint.
    let ann = &pod["metadata"]["annotations"];
    assert_eq!(ann["prometheus.io/scrape"], "true");
    assert_eq!(ann["prometheus.io/port"], "9464");
    assert_eq!(ann["prometheus.io/path"], "/metrics");

    // The config in the ConfigMap matches the mounts, ports and args.
    let config_mount = mount(rekey, "rekey-config");
    let cm_name = str_of(&named(&spec["volumes"], "rekey-config")["configMap"]["name"]);
    let cm = by_kind_name(&docs, "ConfigMap", cm_name);
    let text = str_of(&cm["data"]["rekey.toml"]);
    let args: Vec<&str> = rekey["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(str_of)
        .collect();
    assert_eq!(args, ["-c", &format!("{config_mount}/rekey.toml")]);
    let cfg: toml::Table = toml::from_str(text).unwrap();
    let daemon = &cfg["daemon"];
    assert_eq!(daemon["listen"].as_str(), Some("0.0.0.0:9464"));
    let token = daemon["admin_token_file"].as_str().unwrap();
    assert!(token.starts_with(&format!("{}/", mount(rekey, "rekey-admin-token"))));
    let state = daemon["state_dir"].as_str().unwrap();
    // A subdirectory: rekey refuses the world-writable emptyDir itself.
    assert!(state.starts_with(&format!("{}/", mount(rekey, "rekey-state"))));
    // The admin socket (rotate, retire) is in the state dir: a volume the
    // app container does not mount.
    let app_mounts = app["volumeMounts"].as_sequence().unwrap();
    assert!(app_mounts.iter().all(|m| m["name"] != "rekey-state"));
    let cert = &cfg["certificate"].as_array().unwrap()[0];
    for (_, path) in cert["files"].as_table().unwrap() {
        assert!(path.as_str().unwrap().starts_with(&format!("{rekey_tls}/")));
    }
    // nginx runs on the whole config from its ConfigMap (`nginx -c`): the
    // image's own nginx.conf already sets `pid`, so no `-g "pid ...;"`.
    let command: Vec<&str> = app["command"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(str_of)
        .collect();
    let conf_path = format!("{}/nginx.conf", mount(app, "nginx-config"));
    assert!(
        command.windows(2).any(|w| w == ["-c", conf_path.as_str()]),
        "{command:?}"
    );
    assert!(!command.iter().any(|a| a.contains("pid")), "{command:?}");
    // nginx reads the same files through its own mount of the volume, and
    // writes its pid file where rekey's reload reads it.
    let nginx = str_of(&by_kind_name(&docs, "ConfigMap", "web-nginx")["data"]["nginx.conf"]);
    assert!(
        nginx.contains(&format!("{app_tls}/fullchain.pem")),
        "{nginx}"
    );
    assert!(nginx.contains(&format!("{app_tls}/key.pem")), "{nginx}");
    let pid_file = cert["reload"]["pid_file"].as_str().unwrap();
    let app_pid = pid_file.replacen(mount(rekey, "app-run"), mount(app, "app-run"), 1);
    assert!(pid_file.starts_with(&format!("{}/", mount(rekey, "app-run"))));
    assert_eq!(
        nginx.matches("pid ").count(),
        1,
        "one pid directive: {nginx}"
    );
    assert!(nginx.contains(&format!("pid {app_pid};")), "{nginx}");

    // The admin token is readable by rekey's user: the kubelet gives
    // Secret files the pod's fsGroup, so 0440 is enough (without fsGroup
    // they are root:root and rekey exits at start).
    let sc = &spec["securityContext"];
    let token_vol = &named(&spec["volumes"], "rekey-admin-token")["secret"];
    assert_eq!(
        sc["fsGroup"], sc["runAsGroup"],
        "fsGroup makes the Secret readable"
    );
    assert_eq!(
        token_vol["defaultMode"].as_str(),
        Some("0440"),
        "{token_vol:?}"
    );

    // The config as shipped passes `rekey check` (its state dir moved into
    // a temp dir: the pod's path does not exist here).
    let dir = tempfile::tempdir().unwrap();
    let checkable = text.replace(state, &dir.path().join("state").display().to_string());
    let path = dir.path().join("rekey.toml");
    std::fs::write(&path, checkable).unwrap();
    let out = std::process::Command::new(common::bin())
        .args(["check", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The docs say the same.
    let readme = readme_section("operations.md", "## Kubernetes");
    for claim in [
        "restartPolicy: Always",
        "shareProcessNamespace: true",
        "`/healthz`",
        "`/readyz`",
        "9464",
        "emptyDir",
        "`tls`",
        "startup",
        "liveness",
        "readiness",
    ] {
        assert!(
            readme.contains(claim),
            "docs/operations.md's Kubernetes section lacks {claim:?}"
        );
    }
}

#[test]
fn prometheus_scrape_snippet_keys_on_the_pod_annotations() {
    let text =
        std::fs::read_to_string(root().join("deploy/prometheus/scrape-rekey-pods.yml")).unwrap();
    let v: Value = serde_norway::from_str(&text).unwrap();
    let job = v["scrape_configs"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|j| j["job_name"] == "rekey")
        .unwrap();
    assert_eq!(job["kubernetes_sd_configs"][0]["role"], "pod");
    let relabel = serde_norway::to_string(&job["relabel_configs"]).unwrap();
    for ann in [
        "prometheus_io_scrape",
        "prometheus_io_port",
        "prometheus_io_path",
    ] {
        assert!(
            relabel.contains(&format!("__meta_kubernetes_pod_annotation_{ann}")),
            "{ann}"
        );
    }
}

#[test]
fn dockerfile_is_multi_stage_non_root_with_ca_roots() {
    let text = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    let from: Vec<&str> = text.lines().filter(|l| l.starts_with("FROM ")).collect();
    assert_eq!(from.len(), 2, "{from:?}");
    assert!(from[0].starts_with("FROM rust:") && from[0].ends_with(" AS builder"));
    assert_eq!(from[1], "FROM debian:bookworm-slim");
    assert!(text.contains("cargo build --release --locked"));
    assert!(text.contains("ca-certificates"));
    let user = text
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("no USER");
    assert!(
        !user.starts_with('0') && !user.starts_with("root"),
        "{user}"
    );
    assert!(text.contains("ENTRYPOINT [\"rekey\", \"run\"]"));
    assert!(text.contains("/etc/rekey/rekey.toml"));
    // Every build-context source exists.
    for line in text
        .lines()
        .filter(|l| l.starts_with("COPY ") && !l.contains("--from"))
    {
        let parts: Vec<&str> = line.split_whitespace().collect();
        for src in &parts[1..parts.len() - 1] {
            assert!(root().join(src).exists(), "COPY source {src} is missing");
        }
    }
    let ignore = std::fs::read_to_string(root().join(".dockerignore")).unwrap();
    assert!(ignore.lines().any(|l| l.trim() == "target"));
}

/// The `rekey_*` metric names in a PromQL text.
fn metric_names(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find("rekey_") {
        let name: String = rest[i..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[i + name.len()..];
        // A histogram's series are documented under the family's name.
        let family = ["_bucket", "_count", "_sum"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(&name)
            .to_string();
        out.push(family);
    }
    out
}

/// Every `rekey_*` family the docs' "Metrics" section lists.
fn documented_metrics() -> String {
    readme_section("monitoring.md", "## Metrics")
}

#[test]
fn alerting_rules_pass_promtool_and_their_unit_tests() {
    let Some(promtool) = common::live_binary("promtool", "Debian package prometheus") else {
        return;
    };
    let dir = root().join("deploy/prometheus");
    for args in [
        ["check", "rules", "rekey-rules.yml"],
        ["test", "rules", "rekey-rules.test.yml"],
    ] {
        let out = std::process::Command::new(&promtool)
            .args(args)
            .current_dir(&dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "promtool {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Every alert is tested firing at least once, and the docs name it.
    let rules: Value =
        serde_norway::from_str(&std::fs::read_to_string(dir.join("rekey-rules.yml")).unwrap())
            .unwrap();
    let tests: Value =
        serde_norway::from_str(&std::fs::read_to_string(dir.join("rekey-rules.test.yml")).unwrap())
            .unwrap();
    let fired: Vec<&str> = tests["tests"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|t| t["alert_rule_test"].as_sequence().unwrap())
        .filter(|c| c["exp_alerts"].as_sequence().is_some_and(|a| !a.is_empty()))
        .map(|c| str_of(&c["alertname"]))
        .collect();
    let readme = readme_section("monitoring.md", "## Alerting rules");
    let docs = documented_metrics();
    for rule in rules["groups"][0]["rules"].as_sequence().unwrap() {
        let name = str_of(&rule["alert"]);
        assert!(fired.contains(&name), "{name} is never tested firing");
        assert!(
            readme.contains(&format!("`{name}`")),
            "docs/monitoring.md lacks {name}"
        );
        for metric in metric_names(str_of(&rule["expr"])) {
            // The issuance budget's gauge is documented with its rule.
            assert!(
                docs.contains(&format!("`{metric}")) || readme.contains(&format!("`{metric}")),
                "{name} uses {metric}, which docs/monitoring.md does not document"
            );
        }
    }
}

#[test]
fn the_prometheusrule_manifest_holds_the_same_rules() {
    let dir = root().join("deploy/prometheus");
    let rules: Value =
        serde_norway::from_str(&std::fs::read_to_string(dir.join("rekey-rules.yml")).unwrap())
            .unwrap();
    let manifest: Value = serde_norway::from_str(
        &std::fs::read_to_string(dir.join("rekey-prometheusrule.yaml")).unwrap(),
    )
    .unwrap();
    assert_eq!(manifest["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(manifest["kind"], "PrometheusRule");
    assert_eq!(manifest["metadata"]["name"], "rekey");
    assert_eq!(manifest["spec"]["groups"], rules["groups"]);
}

#[test]
fn the_grafana_dashboard_loads_and_queries_only_documented_metrics() {
    let text = std::fs::read_to_string(root().join("deploy/grafana/rekey-dashboard.json")).unwrap();
    let d: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(d["uid"], "rekey-fleet");
    let panels = d["panels"].as_array().unwrap();
    let mut ids: Vec<i64> = panels.iter().map(|p| p["id"].as_i64().unwrap()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), panels.len(), "panel ids must be unique");
    let titles: Vec<&str> = panels
        .iter()
        .map(|p| p["title"].as_str().unwrap())
        .collect();
    for want in ["per team", "failures", "Handoff latency"] {
        assert!(
            titles.iter().any(|t| t.contains(want)),
            "{want}: {titles:?}"
        );
    }
    let docs = documented_metrics();
    for p in panels {
        let targets = p["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{}", p["title"]);
        for t in targets {
            let expr = t["expr"].as_str().unwrap();
            assert_eq!(t["datasource"]["uid"], "${datasource}");
            for metric in metric_names(expr) {
                assert!(
                    docs.contains(&format!("`{metric}")),
                    "{expr}: {metric} is not in docs/monitoring.md"
                );
            }
        }
    }
    // The team filter offers every team of the fleet.
    let team = &d["templating"]["list"][1];
    assert_eq!(team["name"], "team");
    assert_eq!(team["allValue"], ".*");
}
