//! Handoff groups: which credentials share a reload, the batch timing, and
//! mistakes that name the key and the line.

use std::sync::Arc;
use std::time::Duration;

use super::{line_of, parse, FILE};
use crate::config::{Config, ReloadGroup};

/// A certificate `name` with its own files and the extra lines.
fn cert(name: &str, extra: &str) -> String {
    format!(
        "[[certificate]]\nname = \"{name}\"\nissuer = \"dev\"\ndns_names = [\"{name}.internal\"]\n\
         files = {{ cert = \"/tls/{name}/cert.pem\", key = \"/tls/{name}/key.pem\" }}\n{extra}\n"
    )
}

/// `head` (daemon / group tables), the local CA, then the certificates.
fn config(head: &str, certs: &[String]) -> String {
    format!(
        "{head}\n[issuer.dev]\ntype = \"local-ca\"\n\n{}",
        certs.concat()
    )
}

fn group<'a>(c: &'a Config, name: &str) -> Option<&'a Arc<ReloadGroup>> {
    c.certificates
        .iter()
        .find(|x| x.name == name)
        .and_then(|x| x.reload_group.as_ref())
}

const HUP_NGINX: &str =
    "reload = { type = \"signal\", signal = \"HUP\", pid_file = \"/run/nginx.pid\" }";

#[test]
fn credentials_that_reload_the_same_target_share_one_group() {
    let c = parse(&config(
        "",
        &[
            cert("a", HUP_NGINX),
            cert("b", HUP_NGINX),
            cert("other-pid", "reload = { type = \"signal\", signal = \"HUP\", pid_file = \"/run/other.pid\" }"),
            cert("other-signal", "reload = { type = \"signal\", signal = \"USR1\", pid_file = \"/run/nginx.pid\" }"),
            cert("cmd1", "reload = { type = \"exec\", command = [\"systemctl\", \"reload\", \"app\"] }"),
            cert("cmd2", "reload = { type = \"exec\", command = [\"systemctl\", \"reload\", \"app\"] }"),
            cert("cmd-env", "reload = { type = \"exec\", command = [\"systemctl\", \"reload\", \"app\"], env = { X = \"1\" } }"),
            cert("url1", "reload = { type = \"http\", url = \"http://127.0.0.1:9/reload\" }"),
            cert("url2", "reload = { type = \"http\", url = \"http://127.0.0.1:9/reload\" }"),
            cert("nothing", ""),
        ],
    ))
    .unwrap();
    let a = group(&c, "a").expect("a signal reload is grouped");
    // One shared group object, not a copy per member.
    assert!(Arc::ptr_eq(a, group(&c, "b").unwrap()));
    assert_eq!(a.label, "SIGHUP to the process in /run/nginx.pid");
    assert_eq!(
        (a.window, a.max_wait),
        (Duration::from_millis(200), Duration::from_secs(2))
    );
    for other in ["other-pid", "other-signal", "cmd1", "url1"] {
        assert_ne!(group(&c, other).unwrap().key, a.key, "{other}");
    }
    assert!(Arc::ptr_eq(
        group(&c, "cmd1").unwrap(),
        group(&c, "cmd2").unwrap()
    ));
    assert_eq!(
        group(&c, "cmd1").unwrap().label,
        "command systemctl reload app"
    );
    // Another environment makes another command.
    assert_ne!(
        group(&c, "cmd-env").unwrap().key,
        group(&c, "cmd1").unwrap().key
    );
    assert!(Arc::ptr_eq(
        group(&c, "url1").unwrap(),
        group(&c, "url2").unwrap()
    ));
    assert_eq!(
        group(&c, "url1").unwrap().label,
        "POST http://127.0.0.1:9/reload"
    );
    // Nothing to reload, nothing to share.
    assert!(group(&c, "nothing").is_none());
}

#[test]
fn a_declared_group_joins_different_reloads_and_times_its_own_batches() {
    let c = parse(&config(
        "[daemon]\nreload_window = \"300ms\"\nreload_max_wait = \"4s\"\n\n[reload_group.web]\nwindow = \"1s\"\n\n[reload_group.plain]\n",
        &[
            cert("a", &format!("{HUP_NGINX}\nreload_group = \"web\"")),
            cert("b", "reload = { type = \"exec\", command = [\"nginx\", \"-s\", \"reload\"] }\nreload_group = \"web\""),
            cert("c", &format!("{HUP_NGINX}\nreload_group = \"plain\"")),
            cert("d", HUP_NGINX),
            cert("alone", &format!("{HUP_NGINX}\nreload_group = false")),
        ],
    ))
    .unwrap();
    let web = group(&c, "a").unwrap();
    assert!(Arc::ptr_eq(web, group(&c, "b").unwrap()));
    assert_eq!(web.label, "reload group web");
    assert_eq!(
        (web.window, web.max_wait),
        (Duration::from_secs(1), Duration::from_secs(4))
    );
    // A declared group without settings takes the daemon's.
    let plain = group(&c, "c").unwrap();
    assert_eq!(
        (plain.window, plain.max_wait),
        (Duration::from_millis(300), Duration::from_secs(4))
    );
    // Naming a group takes a credential out of its target's group.
    assert_ne!(plain.key, group(&c, "d").unwrap().key);
    assert!(group(&c, "alone").is_none());
}

#[test]
fn a_zero_window_turns_batching_off() {
    let c = parse(&config(
        "[daemon]\nreload_window = \"0s\"\n\n[reload_group.web]\nwindow = \"100ms\"\n",
        &[
            cert("a", HUP_NGINX),
            cert("b", HUP_NGINX),
            cert("c", &format!("{HUP_NGINX}\nreload_group = \"web\"")),
        ],
    ))
    .unwrap();
    assert!(group(&c, "a").is_none() && group(&c, "b").is_none());
    assert_eq!(c.daemon.reload_window, Duration::ZERO);
    // A declared group may still batch with its own window.
    assert_eq!(group(&c, "c").unwrap().window, Duration::from_millis(100));
}

#[test]
fn api_keys_join_the_group_of_their_reload_target() {
    let text = config(
        "[issuer.keys]\ntype = \"http\"\nbase_url = \"http://127.0.0.1:9/v1\"\n",
        &[cert("web", HUP_NGINX)],
    ) + &format!(
        "[[api_key]]\nname = \"token\"\nissuer = \"keys\"\nfile = \"/tmp/t\"\nmint = {{ path = \"/keys\", secret = \"secret\", id = \"id\" }}\n{HUP_NGINX}\n"
    );
    let c = parse(&text).unwrap();
    let k = c.api_keys[0].reload_group.as_ref().unwrap();
    assert!(Arc::ptr_eq(k, group(&c, "web").unwrap()));
}

#[test]
fn group_mistakes_name_the_key_and_line() {
    // (label, config, key, text on the expected line, message part)
    let cases: Vec<(&str, String, &str, &str, &str)> = vec![
        (
            "an undeclared group, none declared",
            config(
                "",
                &[cert("a", &format!("{HUP_NGINX}\nreload_group = \"ngnix\""))],
            ),
            "certificate[0].reload_group",
            "ngnix",
            "add a [reload_group.ngnix] table",
        ),
        (
            "an undeclared group, others declared",
            config(
                "[reload_group.nginx]\n[reload_group.api]\n",
                &[cert("a", &format!("{HUP_NGINX}\nreload_group = \"ngnix\""))],
            ),
            "certificate[0].reload_group",
            "\"ngnix\"",
            "declared groups: api, nginx",
        ),
        (
            "a named group without a reload",
            config(
                "[reload_group.web]\n",
                &[cert("a", "reload_group = \"web\"")],
            ),
            "certificate[0].reload_group",
            "reload_group = \"web\"",
            "this credential has none",
        ),
        (
            "reload_group = true",
            config("", &[cert("a", "reload_group = true")]),
            "certificate[0].reload_group",
            "reload_group = true",
            "or false to hand this credential over alone; found true",
        ),
        (
            "reload_group a number",
            config("", &[cert("a", "reload_group = 3")]),
            "certificate[0].reload_group",
            "reload_group = 3",
            "found integer",
        ),
        (
            "window too long",
            config("[daemon]\nreload_window = \"6s\"\n", &[]),
            "daemon.reload_window",
            "reload_window",
            "between 0s (no batching) and 5s",
        ),
        (
            "window not a duration",
            config("[daemon]\nreload_window = \"soon\"\n", &[]),
            "daemon.reload_window",
            "reload_window",
            "invalid duration",
        ),
        (
            "max wait too long",
            config("[daemon]\nreload_max_wait = \"2m\"\n", &[]),
            "daemon.reload_max_wait",
            "reload_max_wait",
            "at most 60s",
        ),
        (
            "max wait shorter than the window",
            config(
                "[daemon]\nreload_window = \"1s\"\nreload_max_wait = \"500ms\"\n",
                &[],
            ),
            "daemon.reload_max_wait",
            "reload_max_wait",
            "make the max wait at least the window",
        ),
        (
            "a window past the default max wait",
            config("[daemon]\nreload_window = \"3s\"\n", &[]),
            "daemon.reload_window",
            "reload_window",
            "max wait (2s) is shorter than the window (3s)",
        ),
        (
            "a group's window too long",
            config("[reload_group.web]\nwindow = \"10s\"\n", &[]),
            "reload_group.web.window",
            "window",
            "between 0s (no batching) and 5s",
        ),
        (
            "a group's unknown key",
            config("[reload_group.web]\nwindwo = \"1s\"\n", &[]),
            "reload_group.web.windwo",
            "windwo",
            "did you mean `window`?",
        ),
        (
            "a bad group name",
            config("[reload_group.\"a b\"]\n", &[]),
            "reload_group.a b",
            "reload_group",
            "may only contain letters",
        ),
    ];
    for (label, text, key, marker, part) in cases {
        let err = match parse(&text) {
            Ok(_) => panic!("{label}: parsed, expected an error:\n{text}"),
            Err(e) => e,
        };
        let msg = err.to_string();
        assert_eq!(err.key(), key, "{label}: {msg}");
        let line = line_of(&text, marker);
        assert_eq!(err.line(), Some(line), "{label}: {msg}");
        assert!(msg.contains(part), "{label}: {msg:?} lacks {part:?}");
        assert!(
            msg.starts_with(&format!("{FILE}:{line}:")),
            "{label}: {msg}"
        );
    }
}
