use super::*;

fn write(path: &Path, max: u64, n: usize) {
    let a = Audit::open(path, max).unwrap();
    for i in 0..n {
        let mut e = Entry::daemon(AuditEvent::ConfigLoaded, AuditOutcome::Success, None);
        e.credential = format!("c{i}");
        a.try_record(e).unwrap();
    }
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn chain_continues_across_reopen_and_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("audit.log");
    write(&p, 1000, 7);
    write(&p, 1000, 7);
    assert!(rotated_path(&p, 1).exists());
    // Files past KEEP are deleted; what is kept still verifies.
    let ok = verify(&p).unwrap().unwrap();
    let all = read_all(&p).unwrap();
    let seqs: Vec<u64> = all.iter().map(|(_, _, r)| r.seq).collect();
    assert_eq!(ok.records as usize, seqs.len());
    assert_eq!(seqs.last(), Some(&14));
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
    assert!(ok.files.len() > 2);
}

#[test]
fn edited_deleted_and_reordered_lines_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("audit.log");
    write(&p, DEFAULT_MAX_SIZE, 5);
    let orig = lines(&p);
    let put = |ls: &[String]| std::fs::write(&p, ls.join("\n") + "\n").unwrap();

    let mut edited = orig.clone();
    edited[2] = edited[2].replace("\"c2\"", "\"cX\"");
    put(&edited);
    let b = verify(&p).unwrap().unwrap_err();
    assert_eq!(b.line, 3, "{b}");

    let mut deleted = orig.clone();
    deleted.remove(1);
    put(&deleted);
    let b = verify(&p).unwrap().unwrap_err();
    assert_eq!(b.line, 2, "{b}");

    let mut swapped = orig.clone();
    swapped.swap(3, 4);
    put(&swapped);
    let b = verify(&p).unwrap().unwrap_err();
    assert_eq!(b.line, 4, "{b}");

    let mut first_gone = orig.clone();
    first_gone.remove(0);
    put(&first_gone);
    assert_eq!(verify(&p).unwrap().unwrap_err().line, 1);

    put(&orig);
    assert!(verify(&p).unwrap().is_ok());
}

/// What logrotate does to the file, with and without a SIGHUP (`reopen`):
/// records keep going to the configured path, never to a renamed or
/// deleted file, and the chain verifies across the copies.
#[test]
fn logrotate_rename_copytruncate_and_remove_are_followed() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("audit.log");
    let a = Audit::open(&p, DEFAULT_MAX_SIZE).unwrap();
    let rec = |n: &str| {
        let mut e = Entry::daemon(AuditEvent::ConfigLoaded, AuditOutcome::Success, None);
        e.credential = n.into();
        a.try_record(e).unwrap();
    };
    rec("a");
    rec("b");
    // `create` mode, no signal: rename, then the next record.
    std::fs::rename(&p, dir.path().join("audit.log.1")).unwrap();
    rec("c");
    assert_eq!(lines(&dir.path().join("audit.log.1")).len(), 2);
    assert_eq!(lines(&p).len(), 1, "the record went to the renamed file");
    // dateext + a SIGHUP: reopen lets go at once, the file appears at the next record.
    std::fs::rename(&p, dir.path().join("audit.log-20261201")).unwrap();
    a.reopen();
    assert!(!p.exists());
    rec("d");
    // copytruncate: copy, truncate in place; the descriptor stays.
    std::fs::copy(&p, dir.path().join("audit.log-20261202")).unwrap();
    let ino = std::fs::metadata(&p).unwrap().ino();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&p)
        .unwrap()
        .set_len(0)
        .unwrap();
    rec("e");
    assert_eq!(std::fs::metadata(&p).unwrap().ino(), ino);
    assert_eq!(lines(&p).len(), 1, "appended at the truncated end, no hole");
    assert!(!std::fs::read(&p).unwrap().contains(&0), "no NUL bytes");
    // Removed (here after archiving a copy): a new file, not the deleted inode.
    std::fs::copy(&p, dir.path().join("audit.log-20261203")).unwrap();
    std::fs::remove_file(&p).unwrap();
    rec("f");
    assert_eq!(lines(&p).len(), 1);

    // Compressed copies are listed apart, not read.
    std::fs::write(dir.path().join("audit.log.2.gz"), b"\x1f\x8b").unwrap();
    std::fs::write(dir.path().join("audit.log.bak"), b"not ours").unwrap();
    let ok = verify(&p).unwrap().unwrap();
    assert_eq!(ok.records, 6, "{ok:?}");
    assert_eq!(ok.first_seq, 1);
    let names: Vec<String> = ok
        .files
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "audit.log.1",
            "audit.log-20261201",
            "audit.log-20261202",
            "audit.log-20261203",
            "audit.log"
        ]
    );
    assert_eq!(ok.compressed.len(), 1);

    // A restart continues the chain from the newest copy even when the
    // current file is empty (logrotate's `create`).
    std::fs::rename(&p, dir.path().join("audit.log-20261204")).unwrap();
    std::fs::write(&p, b"").unwrap();
    drop(a);
    write(&p, DEFAULT_MAX_SIZE, 1);
    let ok = verify(&p).unwrap().unwrap();
    assert_eq!(ok.records, 7);

    // Older copies deleted by `rotate N`: the oldest kept may start later.
    std::fs::remove_file(dir.path().join("audit.log.1")).unwrap();
    let ok = verify(&p).unwrap().unwrap();
    assert_eq!((ok.records, ok.first_seq), (5, 3));
    // ...but a copy whose records were removed in the middle is named.
    std::fs::remove_file(dir.path().join("audit.log-20261202")).unwrap();
    let b = verify(&p).unwrap().unwrap_err();
    assert!(b.file.ends_with("audit.log-20261203"), "{b}");
    assert!(b.why.contains("expected record #4, found #5"), "{b}");
}

/// Every outcome rekey writes, with the word it is written as.
const OUTCOMES: [(AuditOutcome, &str); 13] = [
    (AuditOutcome::Success, "success"),
    (AuditOutcome::Failure, "failure"),
    (AuditOutcome::Verified, "verified"),
    (AuditOutcome::Unverified, "unverified"),
    (AuditOutcome::Unreachable, "unreachable"),
    (AuditOutcome::Failed, "failed"),
    (AuditOutcome::RolledBack, "rolled_back"),
    (AuditOutcome::Kept, "kept"),
    (AuditOutcome::Restoring, "restoring"),
    (AuditOutcome::Refused, "refused"),
    (AuditOutcome::Adopted, "adopted"),
    (AuditOutcome::Rejected, "rejected"),
    (AuditOutcome::Retired, "retired"),
];

#[test]
fn outcomes_are_written_as_their_documented_words_and_read_back() {
    for (o, word) in OUTCOMES {
        assert_eq!(o.as_str(), word);
        assert_eq!(o.to_string(), word);
        assert_eq!(serde_json::to_string(&o).unwrap(), format!("\"{word}\""));
        let back: AuditOutcome = serde_json::from_str(&format!("\"{word}\"")).unwrap();
        assert_eq!(back, o, "{word} must read back as itself, not as Other");
    }
}

#[test]
fn a_written_line_reads_back_as_the_same_record() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("audit.log");
    let a = Audit::open(&p, DEFAULT_MAX_SIZE).unwrap();
    let mut e = Entry::daemon(AuditEvent::RolledBack, AuditOutcome::Kept, None);
    e.credential = "web".into();
    a.try_record(e.reason("app never reloaded")).unwrap();
    let line = &lines(&p)[0];
    assert!(
        line.contains(r#""event":"rolled_back","credential":"web","#),
        "{line}"
    );
    assert!(
        line.contains(r#""outcome":"kept","reason":"app never reloaded","#),
        "{line}"
    );
    // The time is RFC 3339 UTC to the second, as before it was typed.
    let at = line.find(r#""time":""#).unwrap() + 8;
    let time = &line[at..at + 21];
    assert!(time.ends_with("Z\""), "{line}");
    assert!(Timestamp::parse(&time[..20]).is_some(), "{line}");
    let (_, _, r) = read_all(&p).unwrap().remove(0);
    assert_eq!(r.outcome, AuditOutcome::Kept);
    // Encoding what was read gives the same bytes: the chain still holds.
    assert_eq!(&chain::encode(&r).unwrap(), line);
}

/// A line an older (or newer) rekey wrote, with an outcome this one does
/// not know: `rekey audit`, `rekey report` and `audit verify` still read it.
#[test]
fn an_old_line_with_an_unknown_outcome_is_still_read() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("audit.log");
    let body = format!(
        r#"{{"seq":1,"time":"2025-06-01T12:00:00Z","event":"verified","credential":"web","team":null,"generation":3,"fingerprint":"sha256:ab","key_id":null,"issuer":"local","outcome":"partly_verified","reason":null,"prev":"{}"}}"#,
        chain::genesis_hash()
    );
    let record: Record = serde_json::from_str(&body).unwrap();
    let line = chain::encode(&record).unwrap();
    assert!(line.starts_with(&body[..body.len() - 1]), "{line}");
    std::fs::write(&p, format!("{line}\n")).unwrap();

    assert_eq!(verify(&p).unwrap().unwrap().records, 1);
    let (_, _, r) = read_all(&p).unwrap().remove(0);
    assert_eq!(r.outcome, AuditOutcome::Other("partly_verified".into()));
    assert_eq!(r.time, Timestamp::parse("2025-06-01T12:00:00Z").unwrap());
    assert_eq!(
        format(&r),
        "2025-06-01T12:00:00Z #1 verified        web gen 3 partly_verified issuer=local fingerprint=sha256:ab"
    );
    // rekey appends after it, and the chain verifies across both.
    write(&p, DEFAULT_MAX_SIZE, 1);
    assert_eq!(verify(&p).unwrap().unwrap().records, 2);
}
