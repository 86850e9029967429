//! Every committed corpus file through its fuzz target, as an ordinary test: the seeds and
//! every input that once crashed a target (`tests/fuzz/corpus/<target>/`) keep passing.

use std::path::Path;

#[test]
fn hardening_fuzz_corpora_replay_without_a_crash() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let mut total = 0;
    for (name, target) in amp_fuzz::TARGETS {
        let dir = root.join(name);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
            .map(|entry| entry.expect("corpus entry").path())
            .collect();
        files.sort();
        assert!(
            files.len() >= 3,
            "corpus {name} has {} seeds; every target needs some",
            files.len()
        );
        for file in files {
            let data = std::fs::read(&file).expect("corpus file");
            target(&data);
            total += 1;
        }
    }
    assert!(total >= 3 * amp_fuzz::TARGETS.len());
}
