//! Each lint on the form it reports and on the forms it must leave alone.

use super::{line_col, lint, LINTS};

/// The lints reported for `source`, in order.
fn lints(source: &str) -> Vec<&'static str> {
    match lint(source) {
        Ok(found) => found.into_iter().map(|f| f.lint).collect(),
        Err(e) => panic!("{source:?} does not parse: {e}"),
    }
}

#[test]
fn each_lint_reports_its_pattern() {
    let cases: &[(&str, &str)] = &[
        ("manual-inherit", "x: { a = a; }"),
        ("manual-inherit-from", "x: { a = x.a; }"),
        ("manual-inherit-from", "x: let a = x.y.a; in a"),
        ("repeated-keys", "{ a.b = 1; a.c = 2; a.d = 3; }"),
        ("empty-let", "let in 1"),
        ("collapsible-let", "let a = 1; in let b = a; in b"),
        ("useless-parens", "{ a = (f 1); }"),
        ("useless-parens", "f: f (1)"),
        ("useless-parens", "f: [(f)]"),
        ("useless-parens", "let a = 1; in (a + 1)"),
        ("useless-parens", "(1 + 1)"),
        ("bool-comparison", "x: x == true"),
        ("bool-comparison", "x: false != x"),
        ("if-then-bool", "x: if x then true else false"),
        ("if-then-bool", "x: if x then false else true"),
        ("eta-reduction", "f: x: f x"),
        ("empty-pattern", "{...}: 1"),
        ("redundant-pattern-bind", "{...} @ args: args"),
        ("useless-has-attr", "s: if s ? a then s.a else 1"),
        ("legacy-let", "let { a = 1; body = a; }"),
        ("deprecated-is-null", "x: isNull x.a"),
        ("deprecated-is-null", "x: builtins.isNull x.a"),
        ("unquoted-uri", "https://example.com"),
        ("bool-simplification", "x: !(x == 1)"),
        ("bool-simplification", "x: !(x != 1)"),
        ("empty-inherit", "{ inherit; }"),
        ("empty-list-concat", "x: [] ++ x"),
        ("empty-list-concat", "x: x ++ []"),
        ("unquoted-splice", "x: ${x}"),
        ("deprecated-to-path", "x: builtins.toPath x.a"),
        ("faster-builtin", "lib: f: lib.groupBy f [1]"),
        ("faster-builtin", "lib: f: lib.zipAttrsWith f [{}]"),
    ];
    for (expected, source) in cases {
        assert_eq!(lints(source), vec![*expected], "{source}");
    }
    // Every lint has a case.
    for (name, _) in LINTS {
        assert!(cases.iter().any(|(l, _)| l == name), "no case for {name}");
    }
}

#[test]
fn clean_forms_are_left_alone() {
    let clean = [
        "x: { inherit x; }",
        // In a let or a rec set `a = a;` is the binding itself, not the outer a.
        "a: let a = a; in a",
        "a: rec { a = a; }",
        "x: { a = x.b; }",
        "s: n: s ? ${n}",
        "s: n: s.${n} or 1",
        "x: { a = x.a or 1; }",
        "{ a.b = 1; a.c = 2; }",
        "{ a = 1; a' = 2; b.c = 3; }",
        "{ a = { b = 1; c = 2; d = 3; }; }",
        "let a = 1; in a",
        "f: f (f 1)",
        "f: g: f (g 1) [(f 1)] { a = f 1; }",
        "x: -(x 1)",
        "x: x == 1",
        "x: if x then 1 else false",
        "f: x: f x x",
        "x: f: x (f x)",
        "{a, ...}: a",
        "{a ? 1}: a",
        "_: 1",
        "s: if s ? a then s.b else 1",
        "\"https://example.com\"",
        "let isNull = 1; in isNull",
        "x: !(x && true)",
        "x: !x",
        "x: [1] ++ x",
        "x: { ${x} = 1; }",
        "x: y: y.${x}",
        "x: \"a${x}\"",
        "lib: lib.groupBy",
    ];
    for source in clean {
        assert_eq!(lints(source), Vec::<&str>::new(), "{source}");
    }
}

#[test]
fn findings_point_at_the_node() {
    let source = "{\n  x = 1;\n  a = a;\n}\n";
    let found = lint(source).unwrap_or_default();
    assert_eq!(found.len(), 1);
    assert_eq!(line_col(source, found[0].offset), (3, 3));
    assert_eq!(found[0].message, "`a = a;`: use `inherit a;`");
}

#[test]
fn unparsable_source_is_an_error() {
    assert!(lint("{ a = ; }").is_err());
}
