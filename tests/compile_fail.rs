//! Compile errors that name the missing piece: each file under `tests/ui`
//! must fail to compile with the message recorded beside it (`.stderr`).
//! Regenerate the messages after a deliberate change with
//! `TRYBUILD=overwrite cargo test --all-features --test compile_fail`, and
//! read them: the point is the words.

#[test]
fn diagnostics_name_the_missing_piece() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
