//! `on_remove`: what a config reload does with a credential it no longer lists.

/// What happens to a credential removed from the config (SIGHUP reload).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OnRemove {
    /// Stop managing it; its files and its validity at the issuer stay.
    #[default]
    Keep,
    /// Retire it: revoke at the issuer where possible, remove its files,
    /// record and alert `retired` (as `rekey retire NAME`).
    Revoke,
}

/// `on_remove = "keep" | "revoke"`.
pub(super) fn on_remove(s: &str) -> Result<OnRemove, String> {
    match s {
        "keep" => Ok(OnRemove::Keep),
        "revoke" => Ok(OnRemove::Revoke),
        _ => Err(format!("unknown value \"{s}\"; allowed: keep, revoke")),
    }
}
