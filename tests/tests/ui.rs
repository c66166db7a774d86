//! Every compile error a user can hit from the macros, pinned with its message and span.

#[test]
fn macro_errors() {
    let t = trybuild::TestCases::new();
    t.compile_fail("ui/fail/*.rs");
    t.pass("ui/pass/*.rs");
}
