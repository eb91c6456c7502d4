//! Helpers for the vault tests: config sections for a `Bao` server,
//! waiting for a credential, `rekey rotate`, signature checks.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use x509_parser::prelude::{FromDer, X509Certificate};

use super::bao::Bao;
use super::*;
use rekey::status::{CredentialStatus, State};

/// A policy that allows signing with the role `web` and nothing else.
pub const SIGN_ONLY: &str = "path \"pki/sign/web\" { capabilities = [\"update\"] }";

/// `[issuer.NAME]` of type vault at `bao`, `auth` and `extra` verbatim
/// (`pki_role = "web"` unless `extra` names one).
pub fn issuer(name: &str, bao: &Bao, auth: &str, extra: &str) -> String {
    let role = if extra.contains("pki_role") {
        ""
    } else {
        "pki_role = \"web\"\n"
    };
    format!(
        "[issuer.{name}]\ntype = \"vault\"\naddress = \"{}\"\nauth = {auth}\n{role}{extra}\n\n",
        bao.url
    )
}

pub fn approle_auth(files: &(PathBuf, PathBuf)) -> String {
    format!(
        "{{ method = \"approle\", role_id_file = \"{}\", secret_id_file = \"{}\" }}",
        files.0.display(),
        files.1.display()
    )
}

/// A certificate `name` from `issuer` with every file kind but bundle.
pub fn cert(env: &Env, name: &str, issuer: &str) -> String {
    let d = env.path("tls").join(name);
    format!(
        "[[certificate]]\nname = \"{name}\"\nissuer = \"{issuer}\"\ndns_names = [\"localhost\"]\nip_addresses = [\"127.0.0.1\"]\nlifetime = \"1h\"\n\
         files = {{ cert = \"{d}/cert.pem\", key = \"{d}/key.pem\", chain = \"{d}/chain.pem\", fullchain = \"{d}/fullchain.pem\", ca = \"{d}/ca.pem\" }}\n\n",
        d = d.display()
    )
}

pub fn valid(addr: std::net::SocketAddr, name: &str) -> CredentialStatus {
    wait_for(
        Duration::from_secs(30),
        &format!("{name} to be valid"),
        || {
            let s = cred(addr, name)?;
            (s.state == State::Valid).then_some(s)
        },
    )
}

pub fn rotate(env: &Env, name: &str) -> std::process::Output {
    Command::new(bin())
        .args(["rotate", name, "-c"])
        .arg(env.path("rekey.toml"))
        .output()
        .unwrap()
}

/// The leaf's signature checks out against `root_pem`.
pub fn signed_by(leaf: &Path, root_pem: &str) -> bool {
    let leaf = rekey::cert::pem_certs(&std::fs::read(leaf).unwrap(), "leaf").unwrap();
    let root = rekey::cert::pem_certs(root_pem.as_bytes(), "root").unwrap();
    let (_, leaf) = X509Certificate::from_der(&leaf[0]).unwrap();
    let (_, root) = X509Certificate::from_der(&root[0]).unwrap();
    leaf.issuer() == root.subject() && leaf.verify_signature(Some(root.public_key())).is_ok()
}
