//! `report.html`: one self-contained page for the analyst, with inline CSS
//! and inline SVG charts, so it opens offline and can be mailed as is.

mod svg;

use std::fmt::Write as _;
use std::time::Duration;

use vigil::verdict::{Reason, Verdict};

use crate::summary::{CommandRow, CountRow, Summary};

/// What the page shows besides the summary.
#[derive(Debug, Clone)]
pub struct Context<'a> {
    pub input: &'a str,
    pub elapsed: Duration,
    pub workers: usize,
}

pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = r#"
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#222;background:#f6f7f9}
main{max-width:1160px;margin:0 auto;padding:24px}
h1{font-size:24px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 10px}
.sub{color:#666;font-size:13px;margin-bottom:16px;word-break:break-all}
.cards{display:flex;gap:12px;flex-wrap:wrap}
.card{flex:1;background:#fff;border-radius:8px;padding:12px 16px;box-shadow:0 1px 2px #0002;min-width:120px}
.card b{display:block;font-size:22px}.card span{color:#666;font-size:12px}
section{background:#fff;border-radius:8px;padding:16px;margin-top:16px;box-shadow:0 1px 2px #0002}
.chart{width:100%;height:auto}.chart .grid{stroke:#e3e6ea}.chart .axis{stroke:#888}
.chart .tick{font-size:11px;fill:#666}.chart .label{font-size:13px;fill:#333}
.chart .panel{font-size:13px;fill:#333;font-weight:600}.chart .cell{font-size:16px;font-weight:600}
.row{display:flex;gap:16px;flex-wrap:wrap}.row>div{flex:1;min-width:300px}
table{border-collapse:collapse;width:100%;font-size:13px}
th,td{text-align:left;padding:6px 8px;border-bottom:1px solid #eceef1;vertical-align:top}
th{background:#f0f2f5;font-weight:600}
td.n{text-align:right;font-variant-numeric:tabular-nums}
.v{display:inline-block;padding:1px 8px;border-radius:10px;color:#fff;font-size:12px;font-weight:600}
.reasons{margin:0;padding-left:16px}.reasons li{margin:2px 0}
.rule{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px}
.empty{color:#888;font-style:italic}
"#;

fn pill(v: Verdict) -> String {
    format!(r#"<span class="v" style="background:{}">{v}</span>"#, svg::color(v))
}

fn reasons(list: &[Reason]) -> String {
    if list.is_empty() {
        return r#"<span class="empty">no rule fired</span>"#.to_owned();
    }
    let mut html = String::from(r#"<ul class="reasons">"#);
    for r in list {
        let _ = write!(
            html,
            r#"<li><span class="rule">{}</span> ({}) {}</li>"#,
            escape(&r.rule),
            r.score,
            escape(&r.message)
        );
    }
    html.push_str("</ul>");
    html
}

fn count_table(title: &str, rows: &[CountRow]) -> String {
    let mut html = format!("<div><h3>{}</h3><table><tr><th>name</th><th>changed</th></tr>", escape(title));
    for r in rows {
        let _ = write!(html, r#"<tr><td>{}</td><td class="n">{}</td></tr>"#, escape(&r.name), r.changed);
    }
    if rows.is_empty() {
        html.push_str(r#"<tr><td colspan="2" class="empty">none</td></tr>"#);
    }
    html.push_str("</table></div>");
    html
}

fn command_table(title: &str, rows: &[CommandRow]) -> String {
    let mut html = format!(
        "<div><h3>{}</h3><table><tr><th>command</th><th>agent</th><th>credentials</th><th>count</th></tr>",
        escape(title)
    );
    for r in rows.iter().take(30) {
        let _ = write!(
            html,
            r#"<tr><td>{}</td><td>{}/{}</td><td class="rule">{}</td><td class="n">{}</td></tr>"#,
            r.command.as_str(),
            escape(&r.tenant),
            escape(&r.agent_id),
            escape(&r.credential_ids.join(", ")),
            r.count
        );
    }
    if rows.is_empty() {
        html.push_str(r#"<tr><td colspan="4" class="empty">none</td></tr>"#);
    }
    html.push_str("</table></div>");
    html
}

fn examples(summary: &Summary) -> String {
    let mut html = String::from(
        r#"<table id="examples"><tr><th>transition</th><th>event</th><th>agent / tool</th><th>before</th><th>after</th><th>reasons before</th><th>reasons after</th></tr>"#,
    );
    for t in &summary.transitions {
        for e in summary.examples.get(&t.transition).into_iter().flatten() {
            let _ = write!(
                html,
                r#"<tr><td>{}</td><td class="rule">{}<br>line {} · {}</td><td>{}/{}<br><span class="rule">{}</span></td><td>{} {}</td><td>{} {}</td><td>{}</td><td>{}</td></tr>"#,
                escape(&t.transition),
                escape(&e.event_id),
                e.line,
                escape(&e.time),
                escape(&e.tenant),
                escape(&e.agent_id),
                escape(e.tool.as_deref().unwrap_or("-")),
                pill(e.before),
                e.score_before,
                pill(e.after),
                e.score_after,
                reasons(&e.reasons_before),
                reasons(&e.reasons_after)
            );
        }
    }
    if summary.transitions.is_empty() {
        html.push_str(r#"<tr><td colspan="7" class="empty">no decision changed</td></tr>"#);
    }
    html.push_str("</table>");
    html
}

fn card(value: impl std::fmt::Display, label: &str) -> String {
    format!(r#"<div class="card"><b>{value}</b><span>{}</span></div>"#, escape(label))
}

/// The whole page.
pub fn html(summary: &Summary, context: &Context<'_>) -> String {
    let share = if summary.compared == 0 { 0.0 } else { summary.changed as f64 * 100.0 / summary.compared as f64 };
    let side = |decisions: &std::collections::BTreeMap<Verdict, u64>| {
        Verdict::ALL
            .iter()
            .map(|v| format!("{} {}", pill(*v), decisions.get(v).copied().unwrap_or(0)))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut html = String::with_capacity(64 * 1024);
    let _ = write!(
        html,
        r#"<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1"><title>Vigil replay: {changed} decisions changed</title><style>{STYLE}</style></head><body><main>"#,
        changed = summary.changed
    );
    let _ = write!(
        html,
        r#"<h1>Vigil replay</h1><div class="sub">input {} ({}){} · candidate {} · baseline {} {} · run {} · {} worker(s), {:.1} s</div>"#,
        escape(context.input),
        escape(&summary.input.sha256),
        summary.checkpoint.as_ref().map_or(String::new(), |c| format!(" from checkpoint {}", escape(&c.sha256))),
        escape(&summary.candidate.rulesets.join(", ")),
        summary.baseline.kind,
        escape(&summary.baseline.rulesets.join(", ")),
        escape(&summary.run_hash),
        context.workers,
        context.elapsed.as_secs_f64()
    );
    html.push_str(r#"<div class="cards">"#);
    html.push_str(&card(summary.input.records, "records replayed"));
    html.push_str(&card(summary.compared, "decisions compared"));
    html.push_str(&card(summary.changed, &format!("verdicts changed ({share:.2}%)")));
    html.push_str(&card(summary.reasons_changed, "same verdict, other rules"));
    if let Some(c) = &summary.commands {
        html.push_str(&card(c.appeared.iter().map(|r| r.count).sum::<u64>(), "commands appear"));
        html.push_str(&card(c.disappeared.iter().map(|r| r.count).sum::<u64>(), "commands disappear"));
    }
    if summary.only_candidate + summary.only_baseline > 0 {
        html.push_str(&card(summary.only_candidate + summary.only_baseline, "decisions without a partner"));
    }
    html.push_str("</div>");
    let _ = write!(
        html,
        r#"<section><table><tr><th>side</th><th>ruleset</th><th>decisions</th></tr><tr><td>baseline ({})</td><td class="rule">{}</td><td>{}</td></tr><tr><td>candidate</td><td class="rule">{}</td><td>{}</td></tr></table></section>"#,
        summary.baseline.kind,
        escape(&summary.baseline.rulesets.join(", ")),
        side(&summary.baseline.decisions),
        escape(&summary.candidate.rulesets.join(", ")),
        side(&summary.candidate.decisions)
    );
    let _ = write!(html, "<section><h2>Decisions over time</h2>{}</section>", svg::timeline(summary));
    let _ = write!(
        html,
        r#"<section class="row"><div><h2>Transitions</h2>{}</div><div><h2>Changes by transition</h2><table><tr><th>transition</th><th>count</th></tr>"#,
        svg::matrix(summary)
    );
    for t in &summary.transitions {
        let _ = write!(
            html,
            r#"<tr><td>{} → {}</td><td class="n">{}</td></tr>"#,
            pill(t.before),
            pill(t.after),
            t.count
        );
    }
    if summary.transitions.is_empty() {
        html.push_str(r#"<tr><td colspan="2" class="empty">no decision changed</td></tr>"#);
    }
    html.push_str("</table></div></section>");
    let _ = write!(html, "<section><h2>Top rules by changed decisions</h2>{}</section>", svg::rules(&summary.rules));
    let _ = write!(
        html,
        r#"<section><h2>Where the changes are</h2><div class="row">{}{}{}</div></section>"#,
        count_table("agents", &summary.top_agents),
        count_table("tools", &summary.top_tools),
        count_table("tenants", &summary.top_tenants)
    );
    if let Some(c) = &summary.commands {
        let _ = write!(
            html,
            r#"<section><h2>Control commands</h2><div class="row">{}{}</div></section>"#,
            command_table("appear under the candidate", &c.appeared),
            command_table("disappear under the candidate", &c.disappeared)
        );
    }
    let _ = write!(html, "<section><h2>Examples</h2>{}</section>", examples(summary));
    html.push_str("</main></body></html>\n");
    html
}
