//! Lints for .nix files: the anti-patterns the Nix linter statix reports, checked on rnix's
//! syntax tree (rnix 0.10, the parser statix and alejandra use). This is our own implementation
//! of the lints that matter for this repository, not statix: statix is in no package registry
//! reachable here. `LINTS` names the statix lint each stands in for.
//!
//! Pure: `lint` takes source text and returns findings; `main.rs` reads the files.

use rnix::types::{
    BinOp, BinOpKind, EntryHolder, Ident, IfElse, Inherit, KeyValue, Lambda, LetIn, Paren, Pattern,
    Select, TokenWrapper, TypedNode, Wrapper,
};
use rnix::{SyntaxKind, SyntaxNode};

/// The lints: the name a finding carries, and the statix lint it stands in for.
pub const LINTS: &[(&str, &str)] = &[
    ("manual-inherit", "manual_inherit"),
    ("manual-inherit-from", "manual_inherit_from"),
    ("repeated-keys", "repeated_keys"),
    ("empty-let", "empty_let_in"),
    ("collapsible-let", "collapsible_let_in"),
    ("useless-parens", "useless_parens"),
    ("bool-comparison", "bool_comparison"),
    ("bool-simplification", "bool_simplification"),
    ("if-then-bool", "none: `if c then true else false`"),
    ("eta-reduction", "eta_reduction"),
    ("empty-pattern", "empty_pattern"),
    ("redundant-pattern-bind", "redundant_pattern_bind"),
    ("useless-has-attr", "useless_has_attr"),
    ("empty-inherit", "empty_inherit"),
    ("empty-list-concat", "empty_list_concat"),
    ("unquoted-splice", "unquoted_splice"),
    ("legacy-let", "legacy_let_syntax"),
    ("deprecated-is-null", "deprecated_is_null"),
    ("deprecated-to-path", "deprecated_to_path"),
    ("faster-builtin", "faster_groupby, faster_zipattrswith"),
    ("unquoted-uri", "unquoted_uri"),
];

/// Entries of one attribute set or let sharing their first key segment, from this many on, are
/// reported as repeated keys: the common pair `a.b = …; a.c = …;` stays allowed.
pub const REPEATED_KEYS_AT: usize = 3;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub lint: &'static str,
    /// Byte offset of the node in the source.
    pub offset: usize,
    pub message: String,
}

/// Every finding in `source`, in source order; Err with the parser's first error when the
/// source does not parse.
pub fn lint(source: &str) -> Result<Vec<Finding>, String> {
    let ast = rnix::parse(source);
    if let Some(e) = ast.errors().first() {
        return Err(e.to_string());
    }
    let mut out = Vec::new();
    let root = ast.node();
    if let Some(inner) = root.first_child() {
        if inner.kind() == SyntaxKind::NODE_PAREN {
            push(
                &mut out,
                "useless-parens",
                &inner,
                "parentheses around the whole file".into(),
            );
        }
    }
    for token in root
        .descendants_with_tokens()
        .filter_map(|e| e.into_token())
    {
        if token.kind() == SyntaxKind::TOKEN_URI {
            out.push(Finding {
                lint: "unquoted-uri",
                offset: usize::from(token.text_range().start()),
                message: format!(
                    "unquoted URI {}: quote it (\"{}\"; RFC 45)",
                    token.text(),
                    token.text()
                ),
            });
        }
    }
    for node in root.descendants() {
        check_node(&node, &mut out);
    }
    out.sort_by_key(|f| f.offset);
    Ok(out)
}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_col(source: &str, offset: usize) -> (usize, usize) {
    let before = &source[..offset.min(source.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

fn push(out: &mut Vec<Finding>, lint: &'static str, node: &SyntaxNode, message: String) {
    out.push(Finding {
        lint,
        offset: usize::from(node.text_range().start()),
        message,
    });
}

fn check_node(node: &SyntaxNode, out: &mut Vec<Finding>) {
    use SyntaxKind::*;
    match node.kind() {
        NODE_ATTR_SET => {
            let recursive = node.children_with_tokens().any(|e| e.kind() == TOKEN_REC);
            entries(node, !recursive, out);
        }
        NODE_LET_IN => {
            entries(node, false, out);
            if let Some(let_in) = LetIn::cast(node.clone()) {
                if let_in.entries().next().is_none() && let_in.inherits().next().is_none() {
                    push(
                        out,
                        "empty-let",
                        node,
                        "`let in` binds nothing: drop the `let in`".into(),
                    );
                }
                if let Some(body) = let_in.body().filter(|b| b.kind() == NODE_LET_IN) {
                    push(
                        out,
                        "collapsible-let",
                        &body,
                        "a `let` right after `in`: merge it into the outer `let`".into(),
                    );
                }
            }
        }
        NODE_LEGACY_LET => push(
            out,
            "legacy-let",
            node,
            "`let { … body = …; }` is deprecated: use `let … in`".into(),
        ),
        NODE_PAREN => parens(node, out),
        NODE_BIN_OP => bool_comparison(node, out),
        NODE_IF_ELSE => if_else(node, out),
        NODE_LAMBDA => lambda(node, out),
        NODE_APPLY => apply(node, out),
        NODE_UNARY_OP => negation(node, out),
        NODE_INHERIT
            if Inherit::cast(node.clone()).is_some_and(|i| i.idents().next().is_none()) =>
        {
            push(
                out,
                "empty-inherit",
                node,
                "`inherit` of nothing: drop it".into(),
            );
        }
        // `${x}` anywhere but in a key (`{ ${x} = 1; }`, `a.${x}`, `a ? ${x}`) or a string.
        NODE_DYNAMIC
            if !node.parent().is_some_and(|p| {
                matches!(p.kind(), NODE_KEY | NODE_SELECT)
                    || (p.kind() == NODE_BIN_OP
                        && p.children_with_tokens().any(|t| t.kind() == TOKEN_QUESTION))
            }) =>
        {
            let msg = format!("`{}` outside a string: drop the `${{ }}`", short(node));
            push(out, "unquoted-splice", node, msg);
        }
        _ => {}
    }
}

/// Calls of deprecated builtins, and of lib functions a builtin does faster.
fn apply(node: &SyntaxNode, out: &mut Vec<Finding>) {
    let Some(f) = node.first_child() else { return };
    let name = f.text().to_string();
    match name.as_str() {
        "isNull" | "builtins.isNull" => {
            let msg = format!("`{name} x` is deprecated: use `x == null`");
            push(out, "deprecated-is-null", node, msg);
        }
        "builtins.toPath" => {
            let msg = "`builtins.toPath` is deprecated: use `/. + x` or a string".to_owned();
            push(out, "deprecated-to-path", node, msg);
        }
        "lib.groupBy" | "lib.zipAttrsWith" => {
            let builtin = name.replace("lib.", "builtins.");
            let msg = format!("`{name}`: `{builtin}` is the same, faster");
            push(out, "faster-builtin", node, msg);
        }
        _ => {}
    }
}

/// `!(a == b)` is `a != b`, and `!(a != b)` is `a == b`.
fn negation(node: &SyntaxNode, out: &mut Vec<Finding>) {
    let inner = node
        .first_child()
        .and_then(Paren::cast)
        .and_then(|p| p.inner());
    let Some(op) = inner.and_then(BinOp::cast).and_then(|b| b.operator()) else {
        return;
    };
    let (from, to) = match op {
        BinOpKind::Equal => ("==", "!="),
        BinOpKind::NotEqual => ("!=", "=="),
        _ => return,
    };
    push(
        out,
        "bool-simplification",
        node,
        format!("`!(a {from} b)`: use `a {to} b`"),
    );
}

/// The text of an identifier node, or None.
fn ident(node: &SyntaxNode) -> Option<String> {
    Ident::cast(node.clone()).map(|i| i.as_str().to_owned())
}

/// The key of a `key = value;` entry as its segments' texts.
fn key_path(kv: &KeyValue) -> Vec<String> {
    kv.key()
        .map(|k| k.path().map(|seg| seg.text().to_string()).collect())
        .unwrap_or_default()
}

/// The lints on the entries of an attribute set or a `let`: manual inherits and repeated keys.
/// `plain_inherit`: `a = a;` may become `inherit a;` (not in a `let` or a `rec` set, where
/// `a` would mean the binding itself).
fn entries(holder: &SyntaxNode, plain_inherit: bool, out: &mut Vec<Finding>) {
    let kvs: Vec<KeyValue> = holder.children().filter_map(KeyValue::cast).collect();
    for kv in &kvs {
        let path = key_path(kv);
        let (Some(value), [name]) = (kv.value(), path.as_slice()) else {
            continue;
        };
        if plain_inherit && ident(&value).as_deref() == Some(name.as_str()) {
            push(
                out,
                "manual-inherit",
                kv.node(),
                format!("`{name} = {name};`: use `inherit {name};`"),
            );
        }
        if let Some(sel) = Select::cast(value.clone()) {
            if let (Some(set), Some(index)) = (sel.set(), sel.index()) {
                if ident(&index).as_deref() == Some(name.as_str()) {
                    let from = set.text().to_string();
                    push(
                        out,
                        "manual-inherit-from",
                        kv.node(),
                        format!("`{name} = {from}.{name};`: use `inherit ({from}) {name};`"),
                    );
                }
            }
        }
    }
    let mut seen: Vec<(String, Vec<&KeyValue>)> = Vec::new();
    for kv in &kvs {
        let Some(first) = key_path(kv).into_iter().next() else {
            continue;
        };
        match seen.iter_mut().find(|(k, _)| *k == first) {
            Some((_, list)) => list.push(kv),
            None => seen.push((first, vec![kv])),
        }
    }
    for (first, list) in seen {
        if list.len() >= REPEATED_KEYS_AT && list.iter().any(|kv| key_path(kv).len() > 1) {
            push(
                out,
                "repeated-keys",
                list[0].node(),
                format!(
                    "`{first}.…` is set in {} entries: write `{first} = {{ … }};` once",
                    list.len()
                ),
            );
        }
    }
}

/// Parentheses that change nothing: around an atom (name, literal, string, list, set, path,
/// parenthesised expression) anywhere, or around the whole value of an entry or a `let` body.
fn parens(node: &SyntaxNode, out: &mut Vec<Finding>) {
    use SyntaxKind::*;
    let Some(inner) = Paren::cast(node.clone()).and_then(|p| p.inner()) else {
        return;
    };
    let atom = matches!(
        inner.kind(),
        NODE_IDENT
            | NODE_LITERAL
            | NODE_STRING
            | NODE_LIST
            | NODE_ATTR_SET
            | NODE_PAREN
            | NODE_PATH_WITH_INTERPOL
    );
    let entry_value = node
        .parent()
        .and_then(KeyValue::cast)
        .and_then(|kv| kv.value())
        .is_some_and(|v| v == *node);
    let let_body = node
        .parent()
        .and_then(LetIn::cast)
        .and_then(|l| l.body())
        .is_some_and(|b| b == *node);
    if atom {
        push(
            out,
            "useless-parens",
            node,
            format!("parentheses around `{}`", short(&inner)),
        );
    } else if entry_value {
        push(
            out,
            "useless-parens",
            node,
            "parentheses around an entry's whole value".into(),
        );
    } else if let_body {
        push(
            out,
            "useless-parens",
            node,
            "parentheses around a `let` body".into(),
        );
    }
}

fn bool_comparison(node: &SyntaxNode, out: &mut Vec<Finding>) {
    let Some(op) = BinOp::cast(node.clone()) else {
        return;
    };
    if op.operator() == Some(BinOpKind::Concat) {
        let empty = |n: Option<SyntaxNode>| {
            n.is_some_and(|n| n.kind() == SyntaxKind::NODE_LIST && n.first_child().is_none())
        };
        if empty(op.lhs()) || empty(op.rhs()) {
            let msg = format!("`{}`: concatenating `[]` changes nothing", short(node));
            push(out, "empty-list-concat", node, msg);
        }
    }
    if !matches!(op.operator(), Some(BinOpKind::Equal | BinOpKind::NotEqual)) {
        return;
    }
    let is_bool = |n: Option<SyntaxNode>| {
        n.and_then(|n| ident(&n))
            .is_some_and(|t| t == "true" || t == "false")
    };
    if is_bool(op.lhs()) || is_bool(op.rhs()) {
        push(
            out,
            "bool-comparison",
            node,
            format!("`{}`: compare a bool by using it (or `!` it)", short(node)),
        );
    }
}

fn if_else(node: &SyntaxNode, out: &mut Vec<Finding>) {
    let Some(ie) = IfElse::cast(node.clone()) else {
        return;
    };
    let (Some(cond), Some(then), Some(els)) = (ie.condition(), ie.body(), ie.else_body()) else {
        return;
    };
    let as_bool = |n: &SyntaxNode| ident(n).filter(|t| t == "true" || t == "false");
    if let (Some(a), Some(b)) = (as_bool(&then), as_bool(&els)) {
        let simpler = match (a.as_str(), b.as_str()) {
            ("true", "false") => "the condition itself".to_owned(),
            ("false", "true") => "`!` the condition".to_owned(),
            (same, _) => format!("`{same}`"),
        };
        push(
            out,
            "if-then-bool",
            node,
            format!("`if … then {a} else {b}`: use {simpler}"),
        );
    }
    // `if s ? a then s.a else d` is `s.a or d`.
    if let Some(test) = BinOp::cast(cond) {
        if let (Some(BinOpKind::IsSet), Some(set), Some(attr)) =
            (test.operator(), test.lhs(), test.rhs())
        {
            if let Some(sel) = Select::cast(then) {
                let same_set = sel.set().is_some_and(|s| s.text() == set.text());
                let same_attr = sel.index().is_some_and(|i| i.text() == attr.text());
                if same_set && same_attr {
                    push(
                        out,
                        "useless-has-attr",
                        node,
                        format!(
                            "`if {0} ? {1} then {0}.{1} else …`: use `{0}.{1} or …`",
                            set.text(),
                            attr.text()
                        ),
                    );
                }
            }
        }
    }
}

fn lambda(node: &SyntaxNode, out: &mut Vec<Finding>) {
    let Some(lam) = Lambda::cast(node.clone()) else {
        return;
    };
    let (Some(arg), Some(body)) = (lam.arg(), lam.body()) else {
        return;
    };
    if let Some(pattern) = Pattern::cast(arg.clone()) {
        if pattern.entries().next().is_none() && pattern.ellipsis() {
            match pattern.at() {
                None => push(
                    out,
                    "empty-pattern",
                    &arg,
                    "`{...}:` takes nothing by name: use `_:`".into(),
                ),
                Some(at) => push(
                    out,
                    "redundant-pattern-bind",
                    &arg,
                    format!("`{{...}} @ {0}`: use `{0}:`", at.as_str()),
                ),
            }
        }
        return;
    }
    // x: f x is f, when f does not mention x.
    let Some(x) = ident(&arg) else { return };
    if body.kind() != SyntaxKind::NODE_APPLY {
        return;
    }
    let (Some(f), Some(last)) = (body.first_child(), body.last_child()) else {
        return;
    };
    let mentions = f
        .descendants()
        .chain(std::iter::once(f.clone()))
        .any(|n| ident(&n).as_deref() == Some(x.as_str()));
    if ident(&last).as_deref() == Some(x.as_str()) && !mentions {
        push(
            out,
            "eta-reduction",
            node,
            format!("`{x}: {} {x}` is `{}`", short(&f), short(&f)),
        );
    }
}

/// A node's text, shortened for a message.
fn short(node: &SyntaxNode) -> String {
    let text = node.text().to_string();
    let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() > 40 {
        format!("{}…", one_line.chars().take(40).collect::<String>())
    } else {
        one_line
    }
}

#[cfg(test)]
mod tests;
