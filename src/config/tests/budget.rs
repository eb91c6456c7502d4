//! `max_issuances` / `max_issuances_total` on any issuer type.

use super::{line_of, parse, web, FILE};
use crate::config::{Budget, Limit};
use crate::config::{IssuanceBudgets, ACME_DEFAULT_TOTAL};

fn issuer(kind: &str, extra: &str) -> String {
    let body = match kind {
        "acme" => "directory = \"https://acme.test/dir\"\ncontact = [\"mailto:ops@rekey.test\"]\nchallenge = { type = \"http-01\", listen = \"127.0.0.1:80\" }\n",
        _ => "",
    };
    format!(
        "[issuer.dev]\ntype = \"{kind}\"\n{body}{extra}\n\n[[certificate]]\n{}\n",
        web("")
    )
}

#[test]
fn budgets_parse_on_every_certificate_issuer_with_defaults_per_type() {
    let c = parse(&issuer("local-ca", "")).unwrap();
    assert_eq!(c.budget("dev"), IssuanceBudgets::for_type("local-ca"));
    assert_eq!(c.budget("dev").per_credential, Limit::Default);
    assert_eq!(c.budget("dev").total, Limit::Unlimited);
    let c = parse(&issuer("acme", "")).unwrap();
    assert_eq!(c.budget("dev").total, Limit::Max(ACME_DEFAULT_TOTAL));
    let c = parse(&issuer(
        "acme",
        "max_issuances = \"5/7d\"\nmax_issuances_total = \"unlimited\"",
    ))
    .unwrap();
    assert_eq!(
        c.budget("dev"),
        IssuanceBudgets {
            per_credential: Limit::Max(Budget {
                count: 5,
                window_s: 7 * 86_400
            }),
            total: Limit::Unlimited,
        }
    );
    let c = parse(&issuer("local-ca", "max_issuances_total = \"300/3h\"")).unwrap();
    assert_eq!(c.budget("dev").total.to_string(), "300/3h");
}

#[test]
fn a_budget_that_does_not_parse_or_is_zero_names_the_key() {
    for (extra, key, part) in [
        (
            "max_issuances = \"0/7d\"",
            "issuer.dev.max_issuances",
            "allows no issuance",
        ),
        (
            "max_issuances = \"lots\"",
            "issuer.dev.max_issuances",
            "COUNT/WINDOW",
        ),
        (
            "max_issuances = \"5/fortnight\"",
            "issuer.dev.max_issuances",
            "invalid window",
        ),
        (
            "max_issuances_total = \"0/3h\"",
            "issuer.dev.max_issuances_total",
            "allows no issuance",
        ),
        (
            "max_issuances_total = \"50/0s\"",
            "issuer.dev.max_issuances_total",
            "between 1s and 366d",
        ),
        (
            "max_issuances = 5",
            "issuer.dev.max_issuances",
            "expected a string",
        ),
    ] {
        let text = issuer("local-ca", extra);
        let e = parse(&text).unwrap_err();
        let msg = e.to_string();
        assert_eq!(e.key(), key, "{msg}");
        assert!(msg.contains(part), "{extra}: {msg}");
        assert!(msg.starts_with(FILE), "{msg}");
        assert_eq!(e.line(), Some(line_of(&text, "max_issuances")), "{msg}");
    }
}
