use super::*;

fn write(path: &Path, max: u64, n: usize) {
    let a = Audit::open(path, max).unwrap();
    for i in 0..n {
        let mut e = Entry::daemon(AuditEvent::ConfigLoaded, "success", None);
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
