//! End-to-end tests of the language through its public API.

use super::parser::{INPUT_MISUSE, MAX_DEPTH, SECRET_MISUSE};
use super::*;
use proptest::prelude::*;
use serde_json::json;

fn doc() -> serde_json::Value {
    json!({
        "pipeline": {
            "name": "deploy",
            "variables": {
                "greeting": "hello", "env": "prod", "count": "200", "n": 3, "half": 2.5,
                "flag": false, "empty": "", "nothing": null, "which": "greeting",
                "list": ["a", "b"], "map": {"k": "v", "my-key": 1},
                "secretish": "<+secrets.getValue(\"env:X\")>"
            },
            "stages": {"build": {"spec": {"execution": {"steps": {"say": {"output": {
                "outputVariables": {"version": "1.2.3"}
            }}}}}}}
        },
        "stage": {"name": "Build", "variables": {"x": "abc", "which": "greeting"}}
    })
}

fn render(s: &str) -> Result<String, EvalError> {
    let t = Template::parse(s).unwrap_or_else(|e| panic!("{s:?}: {e}"));
    t.render(&JsonContext(&doc()))
}

fn rendered(s: &str) -> String {
    render(s).unwrap_or_else(|e| panic!("{s:?}: {e}"))
}

/// The typed value of one block `<+s>`.
fn value(s: &str) -> Value {
    let src = format!("<+{s}>");
    let t = Template::parse(&src).unwrap_or_else(|e| panic!("{src:?}: {e}"));
    t.eval(&JsonContext(&doc())).unwrap_or_else(|e| panic!("{src:?}: {e}"))
}

fn block_err(s: &str) -> EvalError {
    let src = format!("<+{s}>");
    let t = Template::parse(&src).unwrap_or_else(|e| panic!("{src:?}: {e}"));
    t.eval(&JsonContext(&doc())).expect_err(&src)
}

fn cond(s: &str) -> bool {
    let c = Condition::parse(s).unwrap_or_else(|e| panic!("{s:?}: {e}"));
    c.eval(&JsonContext(&doc())).unwrap_or_else(|e| panic!("{s:?}: {e}"))
}

fn parse_err(s: &str) -> ParseError {
    Template::parse(s).expect_err(s)
}

fn cond_err(s: &str) -> ParseError {
    Condition::parse(s).expect_err(s)
}

fn b(v: bool) -> Value {
    Value::Bool(v)
}

fn n(v: f64) -> Value {
    Value::Number(v)
}

#[test]
fn literal_text_renders_to_itself() {
    for s in ["", "plain", "a < b > c", "x<y", "<", "+>", "> <", "é+<"] {
        let t = Template::parse(s).unwrap();
        assert!(t.is_literal(), "{s}");
        assert!(!t.has_secrets() && t.runtime_input().is_none() && t.references().is_empty());
        assert_eq!(rendered(s), s);
        assert_eq!(t.eval(&JsonContext(&doc())).unwrap(), Value::from(s));
    }
}

#[test]
fn renders_paths_into_text() {
    assert_eq!(rendered("Hello <+pipeline.variables.greeting>, <+stage.name>!"), "Hello hello, Build!");
    assert_eq!(
        rendered("v<+pipeline.stages.build.spec.execution.steps.say.output.outputVariables.version>"),
        "v1.2.3"
    );
    assert_eq!(rendered("<+pipeline.variables.n>/<+pipeline.variables.half>"), "3/2.5");
    assert_eq!(rendered("<+pipeline.variables.flag> <+pipeline.variables.nothing>"), "false null");
    assert_eq!(rendered("<+pipeline.variables.list>"), r#"["a","b"]"#);
    assert_eq!(rendered("<+pipeline.variables.map>"), r#"{"k":"v","my-key":1}"#);
    assert_eq!(rendered("<+ pipeline . variables . greeting >"), "hello");
    let t = Template::parse("x <+stage.name>").unwrap();
    assert!(!t.is_literal());
}

#[test]
fn eval_is_typed_only_for_a_single_block() {
    let ctx = doc();
    let ev = |s: &str| Template::parse(s).unwrap().eval(&JsonContext(&ctx)).unwrap();
    assert_eq!(ev("<+pipeline.variables.n>"), n(3.0));
    assert_eq!(ev("<+pipeline.variables.list>"), Value::List(vec!["a".into(), "b".into()]));
    assert_eq!(ev(" <+pipeline.variables.n>"), Value::from(" 3"));
    assert_eq!(ev("<+pipeline.variables.n><+pipeline.variables.n>"), Value::from("33"));
}

#[test]
fn literals_and_escapes() {
    assert_eq!(value(r#""a\"b\\c\nd\te'""#), Value::from("a\"b\\c\nd\te'"));
    assert_eq!(value(r#"'it\'s \"q\"'"#), Value::from("it's \"q\""));
    assert_eq!(value("'>'"), Value::from(">"));
    assert_eq!(value("42"), n(42.0));
    assert_eq!(value("2.5"), n(2.5));
    assert_eq!(value("1e3"), n(1000.0));
    assert_eq!(value("true"), b(true));
    assert_eq!(value("false"), b(false));
    assert_eq!(value("null"), Value::Null);
    let e = parse_err(r#"<+"a\qb">"#);
    assert_eq!(e.offset, 4, "{e}");
    assert!(e.message.contains("unknown escape"), "{e}");
    let e = parse_err(r#"ab <+"abc>"#);
    assert_eq!(e.offset, 5, "{e}");
    assert!(e.message.contains("unterminated string"), "{e}");
    assert!(parse_err("<+12abc>").message.contains("invalid number"));
}

#[test]
fn boolean_operators_and_short_circuit() {
    assert_eq!(value("true || false"), b(true));
    assert_eq!(value("false || false"), b(false));
    assert_eq!(value("false || 'x'"), b(true));
    assert_eq!(value("true && 1"), b(true));
    assert_eq!(value("true && 0"), b(false));
    assert_eq!(value("!true"), b(false));
    assert_eq!(value("!''"), b(true));
    assert_eq!(value("!!'x'"), b(true));
    // The right side would be an unresolved path: short-circuit never evaluates it.
    assert_eq!(value("false && pipeline.nope"), b(false));
    assert_eq!(value("true || pipeline.nope"), b(true));
    assert!(matches!(block_err("true && pipeline.nope"), EvalError::Unresolved { .. }));
}

#[test]
fn comparisons() {
    for (e, want) in [
        ("1 == 1", true),
        ("1 != 1", false),
        ("1 < 2", true),
        ("2 < 1", false),
        ("2 <= 2", true),
        ("3 <= 2", false),
        ("3 > 2", true),
        ("2 > 2", false),
        ("2 >= 2", true),
        ("1 >= 2", false),
        ("'b' > 'a'", true),
        ("'B' < 'a'", true),
        ("'abc' == 'abc'", true),
        ("'200' == 200", true),
        ("200 == '200'", true),
        ("pipeline.variables.count == 200", true),
        ("pipeline.variables.count > 99", true),
        ("'10' > '9'", false),
        ("'1.0' == 1", true),
        ("'abc' == 1", false),
        ("'abc' != 1", true),
        ("true == 'true'", false),
        ("null == null", true),
        ("null == ''", false),
        ("pipeline.variables.nothing == null", true),
        ("pipeline.variables.list == pipeline.variables.list", true),
    ] {
        // Parenthesised: a bare `>` would close the block.
        assert_eq!(value(&format!("({e})")), b(want), "{e}");
    }
    for e in ["true < false", "'abc' < 1", "null > 1", "pipeline.variables.list < 1"] {
        let err = block_err(&format!("({e})"));
        assert!(matches!(&err, EvalError::Type { expr, .. } if expr == e), "{e}: {err}");
    }
    let e = parse_err("<+(1 < 2 < 3)>");
    assert_eq!(e.offset, 9, "{e}");
    assert!(e.message.contains("cannot be chained"), "{e}");
    assert!(Condition::parse("1 == 1 == 1").is_err());
}

#[test]
fn addition_negation_and_precedence() {
    assert_eq!(value("1 + 2"), n(3.0));
    assert_eq!(value("'a' + 1 + 2"), Value::from("a12"));
    assert_eq!(value("1 + 2 + 'a'"), Value::from("3a"));
    assert_eq!(value("'v' + pipeline.variables.half"), Value::from("v2.5"));
    assert_eq!(value("'x' + null + true"), Value::from("xnulltrue"));
    assert_eq!(value("-2"), n(-2.0));
    assert_eq!(value("--2"), n(2.0));
    // unary minus binds tighter than +
    assert_eq!(value("-1 + 3"), n(2.0));
    // + binds tighter than comparisons
    assert_eq!(value("1 + 2 == 3"), b(true));
    // ! binds looser than comparisons: !(1 == 2)
    assert_eq!(value("!1 == 2"), b(true));
    // && binds tighter than ||
    assert_eq!(value("true || false && false"), b(true));
    assert_eq!(value("(true || false) && false"), b(false));
    assert_eq!(value("1 == 1 && 2 == 2"), b(true));
    assert_eq!(value("-(1 + 2)"), n(-3.0));
    assert_eq!(value("(1 + 2).toString().length()"), n(1.0));
    for e in ["true + 1", "null + 1", "-'a'", "pipeline.variables.list + 1"] {
        assert!(matches!(block_err(e), EvalError::Type { .. }), "{e}");
    }
    let e = parse_err("<+1 - 2>");
    assert_eq!(e.offset, 4);
    assert!(e.message.contains("subtraction is not supported"), "{e}");
}

#[test]
fn methods_through_the_grammar() {
    assert_eq!(value("pipeline.variables.greeting.toUpperCase()"), Value::from("HELLO"));
    assert_eq!(value("pipeline.variables.greeting.contains('ell')"), b(true));
    assert_eq!(value("stage.variables.x.startsWith('a') && stage.variables.x.endsWith('c')"), b(true));
    assert_eq!(value("'a,b'.split(',')[1]"), Value::from("b"));
    assert_eq!(value("'a,b'.split(',').length()"), n(2.0));
    assert_eq!(value("' x '.trim().replace('x', 'y')"), Value::from("y"));
    assert_eq!(value("'hello'.substring(1, 3)"), Value::from("el"));
    assert_eq!(value("'hello'.length()"), n(5.0));
    assert_eq!(value("'HeLLo'.toLowerCase().equals('hello')"), b(true));
    assert_eq!(value("pipeline.variables.greeting.matches('\\\\d+')"), b(false));
    assert_eq!(value("'12'.matches('\\\\d+')"), b(true));
    assert_eq!(value("pipeline.variables.count.toNumber() + 1"), n(201.0));
    assert_eq!(value("pipeline.variables.n.toString() + 'x'"), Value::from("3x"));
    assert_eq!(value("pipeline.variables.list.contains('b')"), b(true));
    assert_eq!(value("pipeline.variables.list.length()"), n(2.0));
    assert_eq!(value("pipeline.variables.map.contains('k')"), b(true));
    assert_eq!(value("pipeline.variables.map.length()"), n(2.0));
    let e = block_err("stage.name.nope()");
    let EvalError::Type { expr, message } = &e else { panic!("{e}") };
    assert_eq!(expr, "stage.name.nope()");
    assert!(message.contains("unknown method nope()"), "{message}");
    assert_eq!(
        block_err("'abc'.substring(5)").to_string(),
        "in <+'abc'.substring(5)>: substring(5, 3) is out of range for a string of length 3"
    );
    let e = parse_err("<+trim(x)>");
    assert!(e.message.contains("no functions"), "{e}");
}

#[test]
fn the_first_bare_greater_than_closes_a_block() {
    // `<+a > b>` is the block `<+a >` then the text ` 2>`.
    assert_eq!(rendered("<+pipeline.variables.n > 2>"), "3 2>");
    assert_eq!(rendered("<+(pipeline.variables.n > 2)>"), "true");
    assert_eq!(rendered("<+pipeline.variables.n >= 3>"), "true");
    assert_eq!(rendered("<+'a>b'>"), "a>b");
    assert_eq!(rendered("<+\"<+x>\">"), "<+x>");
    assert_eq!(rendered("<+pipeline.variables.greeting.equals(2 > 1)>"), "false");
    assert_eq!(rendered("<+pipeline.variables.list[(1 > 0).toString().length() + -3]>"), "b");
    assert_eq!(rendered("a<+stage.name>b<+stage.name>c"), "aBuildbBuildc");
    // At the top level of a condition `>` is always a comparison.
    assert!(cond("<+pipeline.variables.n> > 2"));
    assert!(!cond("pipeline.variables.n > 3"));
}

#[test]
fn nested_blocks() {
    assert_eq!(rendered("<+<+pipeline.variables.greeting>.toUpperCase()>"), "HELLO");
    assert_eq!(rendered("<+<+<+stage.name>>>"), "Build");
    assert_eq!(rendered("<+'x' + <+stage.name> + (<+pipeline.variables.n> > 2)>"), "xBuildtrue");
    assert!(cond(r#"<+pipeline.variables.env> == "prod" && <+stage.variables.x>.startsWith("a")"#));
    assert!(!cond(r#"<+pipeline.variables.env> == "dev" || <+stage.variables.x>.startsWith("b")"#));
    assert!(cond(r#"<+pipeline.variables.env == "prod">"#));
}

#[test]
fn conditions() {
    assert!(cond("true"));
    assert!(!cond("  pipeline.variables.flag  "));
    assert!(!cond("<+pipeline.variables.empty>"));
    assert!(cond("<+pipeline.variables.env>"));
    assert!(cond("!pipeline.variables.flag"));
    assert_eq!(cond_err("   ").message, "empty condition");
    let e = cond_err("a == 1 b");
    assert_eq!(e.offset, 7, "{e}");
    let e = cond_err("a = 1");
    assert!(e.message.contains("use `==`"), "{e}");
    let c = Condition::parse("pipeline.nope == 1").unwrap();
    let e = c.eval(&JsonContext(&doc())).unwrap_err();
    assert_eq!(e, EvalError::Unresolved { expr: "pipeline.nope".into() });
}

#[test]
fn unresolved_paths_name_the_path() {
    let un = |s: &str| EvalError::Unresolved { expr: s.to_string() };
    assert_eq!(render("x <+pipeline.variables.nope> y"), Err(un("pipeline.variables.nope")));
    assert_eq!(block_err("pipeline.variables.nope.toUpperCase()"), un("pipeline.variables.nope"));
    assert_eq!(block_err("nothing"), un("nothing"));
    assert_eq!(block_err("pipeline.variables.list[5]"), un("pipeline.variables.list[5]"));
    assert_eq!(block_err("pipeline.variables.greeting.x"), un("pipeline.variables.greeting.x"));
    assert_eq!(block_err("pipeline.variables.map[stage.name]"), un("pipeline.variables.map[stage.name]"));
    assert_eq!(block_err("(pipeline.variables.map).nope"), un("(pipeline.variables.map).nope"));
    assert_eq!(
        render("<+pipeline.variables.nope>").unwrap_err().to_string(),
        "unresolved expression <+pipeline.variables.nope>"
    );
    let e = block_err("pipeline.variables.list[1 + 4]");
    assert!(matches!(&e, EvalError::Type { message, .. } if message.contains("out of range")), "{e}");
    let e = block_err("(pipeline.variables.greeting).x");
    assert!(matches!(&e, EvalError::Type { message, .. } if message.contains("cannot read field")), "{e}");
    let e = block_err("pipeline.variables.greeting[true]");
    assert!(matches!(&e, EvalError::Type { message, .. } if message.contains("cannot index")), "{e}");
}

#[test]
fn indexing_and_map_lookups() {
    assert_eq!(rendered("<+pipeline.variables[\"greeting\"]>"), "hello");
    assert_eq!(rendered("<+pipeline.variables.map['my-key']>"), "1");
    assert_eq!(rendered("<+pipeline.variables.list[0]><+pipeline.variables.list[1]>"), "ab");
    assert_eq!(rendered("<+pipeline.variables[stage.variables.which]>"), "hello");
    assert_eq!(rendered("<+pipeline[\"variables\"][pipeline.variables.which].length()>"), "5");
    assert_eq!(rendered("<+pipeline.variables.list[0 + 1]>"), "b");
}

/// A context that only answers for whole roots, like an engine holding one map per scope.
struct RootsOnly(serde_json::Value);

impl Context for RootsOnly {
    fn lookup(&self, path: &[&str]) -> Option<Value> {
        match path {
            [root] => self.0.get(root).map(Value::from_json),
            _ => None,
        }
    }
}

#[test]
fn prefix_lookups_walk_the_rest() {
    let ctx = RootsOnly(doc());
    let t = Template::parse("<+pipeline.variables.greeting> <+pipeline.variables.list[1]> <+stage.name>")
        .unwrap();
    assert_eq!(t.render(&ctx).unwrap(), "hello b Build");
    let t = Template::parse("<+pipeline.variables.nope>").unwrap();
    assert_eq!(t.render(&ctx), Err(EvalError::Unresolved { expr: "pipeline.variables.nope".into() }));
}

#[test]
fn references_in_source_order() {
    let s = "<+a.b[0].c['d']> and <+x[e.f].g.h(i)> <+1 + k> <+secrets.getValue(\"env:A\")>";
    let t = Template::parse(s).unwrap();
    let r = t.references();
    let want: Vec<(Vec<String>, usize)> = vec![
        (vec!["a".into(), "b".into(), "0".into(), "c".into(), "d".into()], 2),
        (vec!["x".into()], s.find("x[").unwrap()),
        (vec!["e".into(), "f".into()], s.find("e.f").unwrap()),
        (vec!["i".into()], s.find("i)").unwrap()),
        (vec!["k".into()], s.find('k').unwrap()),
    ];
    assert_eq!(r, want);
    let t = Template::parse("<+<+stage.name>.trim()> <+(pipeline.x).y>").unwrap();
    let r = t.references();
    assert_eq!(r, vec![(vec!["stage".into(), "name".into()], 4), (vec!["pipeline".into(), "x".into()], 27)]);
    let c = Condition::parse("<+pipeline.variables.env> == 'prod' && stage.x").unwrap();
    assert_eq!(
        c.references(),
        vec![
            (vec!["pipeline".into(), "variables".into(), "env".into()], 2),
            (vec!["stage".into(), "x".into()], 39)
        ]
    );
}

#[test]
fn secrets_are_kept_verbatim() {
    let s = r#"curl -u admin:<+secrets.getValue("env:PW")> <+pipeline.variables.greeting> <+secrets.getValue('file:/etc/k')>"#;
    let t = Template::parse(s).unwrap();
    assert!(t.has_secrets() && !t.is_literal());
    assert_eq!(
        t.references(),
        vec![(vec!["pipeline".into(), "variables".into(), "greeting".into()], s.find("pipeline").unwrap())]
    );
    let out = t.render(&JsonContext(&doc())).unwrap();
    assert_eq!(
        out,
        r#"curl -u admin:<+secrets.getValue("env:PW")> hello <+secrets.getValue('file:/etc/k')>"#
    );
    // What the manager renders, the delegate resolves.
    let resolved = crate::secret_ref::substitute(&out, |r| Ok::<_, ()>(format!("[{r}]"))).unwrap().unwrap();
    assert_eq!(resolved, "curl -u admin:[env:PW] hello [file:/etc/k]");
    let only = Template::parse(r#"<+secrets.getValue("env:PW")>"#).unwrap();
    assert_eq!(only.eval(&JsonContext(&doc())).unwrap(), Value::from(r#"<+secrets.getValue("env:PW")>"#));
}

#[test]
fn secret_misuse_is_a_parse_error_at_the_reference() {
    for s in [
        r#"<+secrets.getValue("env:PW") + "x">"#,
        r#"<+"x" + secrets.getValue("env:PW")>"#,
        r#"<+<+secrets.getValue("env:PW")>.trim()>"#,
        r#"<+secrets.getValue("env:PW").trim()>"#,
        r#"<+(secrets.getValue("env:PW"))>"#,
        r#"<+secrets.getValue(secrets.getValue("env:PW"))>"#,
        r#"<+secrets.foo>"#,
        r#"<+secrets>"#,
    ] {
        let e = parse_err(s);
        assert_eq!(e.message, SECRET_MISUSE, "{s}");
        assert_eq!(&s[e.offset..e.offset + 7], "secrets", "{s}");
    }
    for s in [r#"<+secrets.getValue("env:PW")> == "x""#, r#"secrets.getValue("env:PW") != ''"#] {
        let e = cond_err(s);
        assert_eq!(e.message, SECRET_MISUSE, "{s}");
        assert_eq!(&s[e.offset..e.offset + 7], "secrets", "{s}");
    }
    // Malformed references are refused by the rules delegates resolve with.
    let e = parse_err(r#"x <+secrets.getValue("vault:a")>"#);
    assert_eq!(e.offset, 2);
    assert!(e.message.contains("unknown secret store"), "{e}");
    let e = parse_err(r#"<+secrets.getValue("file:rel")>"#);
    assert!(e.message.contains("must be absolute"), "{e}");
    let e = parse_err(r#"<+secrets.getValue("env:A", "b")>"#);
    assert!(e.message.contains("bad secret reference"), "{e}");
    let e = parse_err(r#"<+ secrets.getValue("env:A") >"#);
    assert!(e.message.contains("exactly"), "{e}");
    let e = parse_err(r#"<+secrets.getValue("env:A\"")>"#);
    assert!(e.message.contains("bad secret reference"), "{e}");
    assert!(Template::parse(r#"<+secrets.getValue(env)>"#).is_err());
}

#[test]
fn runtime_inputs() {
    let input = |s: &str| Template::parse(s).unwrap_or_else(|e| panic!("{s}: {e}")).runtime_input().cloned();
    let ri = |d: Option<&str>, a: &[&str]| {
        Some(RuntimeInput {
            default: d.map(String::from),
            allowed: a.iter().map(|s| s.to_string()).collect(),
        })
    };
    assert_eq!(input("<+input>"), ri(None, &[]));
    assert_eq!(
        input("<+input>.default(dev).allowedValues(dev,qa,prod)"),
        ri(Some("dev"), &["dev", "qa", "prod"])
    );
    assert_eq!(
        input("<+input>.allowedValues(dev, qa , prod).default(qa)"),
        ri(Some("qa"), &["dev", "qa", "prod"])
    );
    assert_eq!(input("<+input>.default(us-east-1)"), ri(Some("us-east-1"), &[]));
    assert_eq!(
        input(r#"<+input>.allowedValues("a,b", 'c)').default("a,b")"#),
        ri(Some("a,b"), &["a,b", "c)"])
    );
    assert_eq!(input("<+input>.executionInput().default(x)"), ri(Some("x"), &[]));
    assert_eq!(input("<+input>.default(1.2.3) "), ri(Some("1.2.3"), &[]));
    assert_eq!(input("plain"), None);

    let t = Template::parse("<+input>.default(dev)").unwrap();
    assert!(!t.is_literal() && !t.has_secrets() && t.references().is_empty());
    let not_supplied =
        EvalError::Type { expr: "input".into(), message: "runtime input was not supplied".into() };
    assert_eq!(t.render(&JsonContext(&doc())), Err(not_supplied.clone()));
    assert_eq!(t.eval(&JsonContext(&doc())), Err(not_supplied));
}

#[test]
fn runtime_input_misuse() {
    for (s, offset, needle) in [
        ("x <+input>", 4, INPUT_MISUSE),
        ("<+ input>", 3, INPUT_MISUSE),
        ("<+input.default(a)>", 2, INPUT_MISUSE),
        ("<+input>x", 8, "unexpected text after <+input>"),
        ("<+input> <+a>", 8, "unexpected text after <+input>"),
        ("<+input>.default(a,b)", 9, "exactly one value"),
        ("<+input>.default()", 9, "exactly one value"),
        ("<+input>.default(x).allowedValues(a,b)", 9, "not one of the allowed values"),
        ("<+input>.allowedValues()", 9, "at least one value"),
        ("<+input>.executionInput(x)", 9, "takes no values"),
        ("<+input>.regex(a)", 9, "unknown runtime input modifier"),
        ("<+input>.default(a).default(b)", 20, "given twice"),
        ("<+input>.default(a", 16, "unclosed"),
        ("<+input>.default(,)", 17, "expected a value"),
        ("<+input>.default(<+a>)", 17, "expressions are not allowed"),
        ("<+input>.default", 16, "`(` after .default"),
        ("<+input>.", 9, "after `.`"),
    ] {
        let e = parse_err(s);
        assert_eq!(e.offset, offset, "{s}: {e}");
        assert!(e.message.contains(needle), "{s}: {e}");
    }
    let e = cond_err("<+input> == 'a'");
    assert_eq!((e.offset, e.message.as_str()), (2, INPUT_MISUSE));
}

#[test]
fn parse_errors_point_at_the_right_byte() {
    for (s, offset, needle) in [
        ("abc <+pipeline.", 15, "a name after `.`"),
        ("ab <+a.b", 3, "unclosed `<+` block"),
        ("<+a +>", 5, "expected an expression, found `>`"),
        ("<+a = b>", 4, "use `==`"),
        ("x <+>", 2, "empty `<+>` block"),
        ("<+ 1 2>", 5, "expected `>` to close the `<+` block, found `2`"),
        ("é<+é>", 4, "found `é`"),
        ("<+a[1>", 3, "unclosed `[`"),
        ("<+a[1 2]>", 6, "expected `]`"),
        ("<+(1>", 2, "unclosed `(`"),
        ("<+a.f(1 2)>", 8, "expected `,` or `)`"),
        ("<+a.f(1>", 5, "unclosed `(`"),
        ("<+a | b>", 4, "use `||` and `&&`"),
        ("<+\"é\" é>", 7, "found `é`"),
    ] {
        let e = parse_err(s);
        assert_eq!(e.offset, offset, "{s}: {e}");
        assert!(e.message.contains(needle), "{s}: {e}");
        assert_eq!(e.to_string(), format!("{} (at offset {offset})", e.message));
    }
}

#[test]
fn nesting_is_bounded() {
    let parens = |k: usize| format!("<+{}1{}>", "(".repeat(k), ")".repeat(k));
    // The block itself is one level.
    assert_eq!(rendered(&parens(MAX_DEPTH - 1)), "1");
    let e = parse_err(&parens(MAX_DEPTH));
    assert!(e.message.contains("nested too deeply"), "{e}");
    assert_eq!(e.offset, 2 + MAX_DEPTH - 1);
    for s in [
        format!("<+{}1>", "!".repeat(10_000)),
        format!("<+{}1>", "-".repeat(10_000)),
        format!("{}1{}", "<+".repeat(10_000), ">".repeat(10_000)),
        format!("<+a{}>", "[0".repeat(10_000)),
        format!("<+{}1>", "a.f(".repeat(10_000)),
    ] {
        let e = parse_err(&s);
        assert!(e.message.contains("nested too deeply"), "{e}");
    }
    assert!(cond_err(&"(".repeat(100_000)).message.contains("nested too deeply"));
    // Long flat chains are not nesting: they parse and evaluate without deep recursion.
    assert_eq!(value(&vec!["1"; 20_000].join(" + ")), n(20_000.0));
    assert_eq!(value(&vec!["true"; 20_000].join(" && ")), b(true));
    assert_eq!(value(&format!("'x'{}", ".trim()".repeat(20_000))), Value::from("x"));
    assert!(matches!(block_err(&format!("a{}", ".b".repeat(20_000))), EvalError::Unresolved { .. }));
}

#[test]
fn render_json_renders_every_string() {
    let v = json!({
        "url": "https://<+stage.name>.example/<+pipeline.variables.n>",
        "n": 1, "ok": true, "none": null,
        "<+keys>": "untouched key",
        "headers": ["a: <+pipeline.variables.greeting>", "<+secrets.getValue(\"env:T\")>"],
    });
    let out = render_json(&v, &JsonContext(&doc())).unwrap();
    assert_eq!(
        out,
        json!({
            "url": "https://Build.example/3",
            "n": 1, "ok": true, "none": null,
            "<+keys>": "untouched key",
            "headers": ["a: hello", "<+secrets.getValue(\"env:T\")>"],
        })
    );
    let bad = json!({"spec": {"headers": ["ok", "<+oops"]}});
    let e = render_json(&bad, &JsonContext(&doc())).unwrap_err();
    let EvalError::Type { expr, message } = &e else { panic!("{e}") };
    assert_eq!(expr, "spec.headers[1]");
    assert!(message.contains("unclosed"), "{message}");
    let e = render_json(&json!("<+"), &JsonContext(&doc())).unwrap_err();
    assert!(matches!(&e, EvalError::Type { expr, .. } if expr == "$"), "{e}");
    let e = render_json(&json!({"a": "<+nope>"}), &JsonContext(&doc())).unwrap_err();
    assert_eq!(e, EvalError::Unresolved { expr: "nope".into() });
}

#[test]
fn context_values_are_not_re_evaluated() {
    // A value that looks like an expression renders as text; it is not parsed again.
    let ctx = json!({"v": {"expr": "<+pipeline.variables.greeting>", "lt": "<", "rest": "+secrets.getValue(\"env:X\")>"}});
    let t = Template::parse("<+v.expr> <+v.lt>").unwrap();
    assert_eq!(t.render(&JsonContext(&ctx)).unwrap(), "<+pipeline.variables.greeting> <");
}

#[test]
fn values_cannot_smuggle_in_secret_references() {
    // The delegate resolves every reference in what it receives, so one coming from data
    // (a webhook payload, a step output) would let that data pick a secret.
    let refused = |e: EvalError, path: &str| {
        assert!(
            matches!(&e, EvalError::Type { expr, message } if expr == path && message.contains("secret reference")),
            "{e}"
        );
    };
    refused(render("echo <+pipeline.variables.secretish>").unwrap_err(), "pipeline.variables.secretish");
    refused(block_err("pipeline.variables.secretish"), "pipeline.variables.secretish");
    refused(block_err("pipeline.variables.secretish.trim()"), "pipeline.variables.secretish.trim()");
    refused(block_err("pipeline.variables"), "pipeline.variables");
    // Formed across the edge of a block, or between two blocks.
    let ctx = json!({"v": {"lt": "<", "rest": "+secrets.getValue(\"env:X\")>", "open": "<+secrets.get"}});
    let t = Template::parse("<+v.lt><+v.rest>").unwrap();
    refused(t.render(&JsonContext(&ctx)).unwrap_err(), "v.lt");
    let t = Template::parse("<+v.open>Value(\"env:X\")>").unwrap();
    refused(t.render(&JsonContext(&ctx)).unwrap_err(), "v.open");
    // The template's own references are fine next to ordinary values.
    let t = Template::parse(r#"<+v.lt><+secrets.getValue("env:X")>"#).unwrap();
    assert_eq!(t.render(&JsonContext(&ctx)).unwrap(), r#"<<+secrets.getValue("env:X")>"#);
}

#[test]
fn a_greater_or_equal_that_cannot_compare_closes_the_block() {
    // `>=` at a block's top level compares; when that cannot parse, the `>` closes it.
    assert_eq!(rendered("KEY_<+stage.name>=x"), "KEY_Build=x");
    assert_eq!(rendered("<+stage.name>=<+pipeline.variables.n> and <+stage.name>"), "Build=3 and Build");
    assert_eq!(rendered("<+pipeline.variables.n >= 3>"), "true");
    assert_eq!(rendered("<+pipeline.variables.n>=3>"), "true");
    // `>==` is `>` then `==`: the block closes.
    assert_eq!(rendered("<+stage.name>==x"), "Build==x");
    assert!(cond(r#"<+pipeline.variables.env>=="prod""#));
    assert!(cond("<+pipeline.variables.n>>=3"));
    // Only a `>=` written right after its left operand retries, so a typo in a spaced
    // comparison stays an error instead of turning into text.
    let e = parse_err("<+a >= 1 +>");
    assert_eq!(e.offset, 10, "{e}");
    assert_eq!(rendered("<+stage.name>=1 +>"), "Build=1 +>");
    // After the retry, the rest is ordinary text and blocks.
    let e = parse_err("<+a>=(1 <+b");
    assert_eq!(e.offset, 8, "{e}");
    assert!(e.message.contains("unclosed `<+` block"), "{e}");
}

#[test]
fn value_conversions() {
    assert_eq!(Value::from("a"), Value::String("a".into()));
    assert_eq!(Value::from(String::from("a")), Value::String("a".into()));
    assert_eq!(Value::from(true), Value::Bool(true));
    assert_eq!(Value::from(1.5), Value::Number(1.5));
}

/// Pieces that make interesting inputs far more often than uniform random text.
fn fragments() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("<+"),
        Just(">"),
        Just(">="),
        Just("\""),
        Just("'"),
        Just("("),
        Just(")"),
        Just("["),
        Just("]"),
        Just("."),
        Just(","),
        Just(" "),
        Just("\\"),
        Just("a"),
        Just("pipeline"),
        Just("variables"),
        Just("greeting"),
        Just("list"),
        Just("n"),
        Just("0"),
        Just("1.5"),
        Just("+"),
        Just("-"),
        Just("!"),
        Just("=="),
        Just("<"),
        Just("&&"),
        Just("||"),
        Just("secrets"),
        Just("getValue"),
        Just("(\"env:A\")"),
        Just("input"),
        Just("<+input>"),
        Just(".default(x)"),
        Just("toUpperCase()"),
        Just("split"),
        Just("é"),
        Just("€"),
        Just("true"),
        Just("null"),
    ];
    prop::collection::vec(piece, 0..40).prop_map(|v| v.concat())
}

fn check_parse_error(s: &str, e: &ParseError) -> Result<(), TestCaseError> {
    prop_assert!(e.offset <= s.len(), "{s:?}: {e}");
    prop_assert!(s.is_char_boundary(e.offset), "{s:?}: {e}");
    Ok(())
}

/// Parses and, when that works, evaluates `s` both ways; never panics.
fn exercise(s: &str) -> Result<(), TestCaseError> {
    let ctx = doc();
    let ctx = JsonContext(&ctx);
    match Template::parse(s) {
        Ok(t) => {
            let _ = t.render(&ctx);
            let _ = t.eval(&ctx);
            for (_, offset) in t.references() {
                prop_assert!(offset < s.len() && s.is_char_boundary(offset));
            }
        }
        Err(e) => check_parse_error(s, &e)?,
    }
    match Condition::parse(s) {
        Ok(c) => {
            let _ = c.eval(&ctx);
            let _ = c.references();
        }
        Err(e) => check_parse_error(s, &e)?,
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn expr_never_panics_on_arbitrary_text(s in ".*") {
        exercise(&s)?;
    }

    #[test]
    fn expr_never_panics_on_expression_like_text(s in fragments()) {
        exercise(&s)?;
    }

    #[test]
    fn expr_never_panics_inside_a_block(s in fragments()) {
        exercise(&format!("<+{s}>"))?;
        exercise(&format!("x<+{s}>y"))?;
    }

    #[test]
    fn expr_text_without_blocks_renders_to_itself(s in "[a-z<>+é \"'()]{0,40}") {
        prop_assume!(!s.contains("<+"));
        let t = Template::parse(&s).unwrap();
        prop_assert!(t.is_literal());
        prop_assert_eq!(t.render(&JsonContext(&doc())).unwrap(), s);
    }

    #[test]
    fn expr_deep_nesting_is_an_error_not_a_crash(
        k in 0usize..2000,
        open in prop::sample::select(vec!["(", "<+", "!", "-", "a[", "a.f(", "[", "<+("]),
        close in prop::sample::select(vec![")", ">", "]", ""]),
    ) {
        let s = format!("{}1{}", open.repeat(k), close.repeat(k));
        exercise(&s)?;
        exercise(&format!("<+{s}>"))?;
        if k > MAX_DEPTH {
            let wrapped = format!("<+{s}>");
            prop_assert!(Template::parse(&wrapped).is_err());
        }
    }
}
