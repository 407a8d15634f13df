//! `cbuild query EXPR [--output label|json|dot]`.

use std::process::ExitCode;

use clap::{Args, ValueEnum};

use crate::cli::output::Failure;
use crate::cli::settings::{GlobalArgs, Settings};

#[derive(Args, Debug)]
pub struct QueryArgs {
    /// The query expression, e.g. `deps(//services/api:image)`.
    pub expr: String,
    /// Output format.
    #[arg(long, value_enum, default_value = "label")]
    pub output: QueryOutput,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum QueryOutput {
    /// One label per line.
    Label,
    /// A JSON array of {label, kind, deps, attrs}.
    Json,
    /// A Graphviz digraph of the result and the edges among it.
    Dot,
}

pub fn run(g: &GlobalArgs, a: QueryArgs) -> Result<ExitCode, Failure> {
    let s = Settings::resolve(g)?;
    let cur = s.current_package();
    let expr = super::super::query::parse(&a.expr, cur.as_ref())
        .map_err(|m| Failure::user(format!("invalid query `{}`: {m}", a.expr)))?;
    let mut pats = Vec::new();
    expr.patterns(&mut pats);
    let (loaded, result) = if expr.has_files() {
        // Who reads a file is known only with every target loaded and analysed.
        pats.push(crate::model::label::Pattern::parse("//...", None).map_err(|e| Failure::user(e.to_string()))?);
        let (loaded, index) = super::load_indexed(&s, &pats)?;
        let result = expr.eval_with(&loaded.graph, &|f| index.readers(f, super::super::inputs::Change::Unknown));
        (loaded, result)
    } else {
        let loaded = super::load(&s, &pats)?;
        let result = expr.eval(&loaded.graph);
        (loaded, result)
    };
    let text = match a.output {
        QueryOutput::Label => result.iter().map(|l| format!("{l}\n")).collect::<String>(),
        QueryOutput::Json => {
            let v: Vec<serde_json::Value> = result
                .iter()
                .map(|l| {
                    let n = &loaded.graph.nodes[l];
                    serde_json::json!({
                        "label": l.to_string(),
                        "kind": n.kind,
                        "deps": n.deps.iter().map(|d| d.to_string()).collect::<Vec<_>>(),
                        "attrs": redact_env(&n.attrs),
                    })
                })
                .collect();
            serde_json::to_string_pretty(&v).map_err(Failure::env)? + "\n"
        }
        QueryOutput::Dot => {
            let mut s = String::from("digraph cbuild {\n  rankdir=LR;\n  node [shape=box, fontname=\"monospace\"];\n");
            for l in &result {
                let n = &loaded.graph.nodes[l];
                s.push_str(&format!("  \"{l}\" [label=\"{l}\\n({})\"];\n", n.kind));
            }
            for l in &result {
                for d in &loaded.graph.nodes[l].deps {
                    if result.contains(d) {
                        s.push_str(&format!("  \"{l}\" -> \"{d}\";\n"));
                    }
                }
            }
            s.push_str("}\n");
            s
        }
    };
    crate::out!("{text}");
    Ok(ExitCode::SUCCESS)
}

/// Attributes as `query --output json` shows them: values of `env` dicts are replaced by
/// `<redacted>` (they may hold tokens; the names are enough to see what is set).
fn redact_env<T: serde::Serialize>(attrs: &T) -> serde_json::Value {
    let mut v = serde_json::to_value(attrs).unwrap_or(serde_json::Value::Null);
    if let Some(obj) = v.as_object_mut() {
        for (k, val) in obj.iter_mut() {
            if k == "env" || k.ends_with("_env") {
                if let Some(m) = val.as_object_mut() {
                    for x in m.values_mut() {
                        *x = serde_json::Value::String("<redacted>".into());
                    }
                }
            }
        }
    }
    v
}
