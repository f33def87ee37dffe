//! The report's charts as inline SVG, drawn here so the page needs no
//! script, no font and no network to render.

use std::fmt::Write as _;

use vigil::event::Timestamp;
use vigil::verdict::Verdict;

use super::escape;
use crate::summary::{RuleRow, Summary, Timeline};
use crate::tally::VerdictCounts;

pub fn color(v: Verdict) -> &'static str {
    match v {
        Verdict::Allow => "#5b9a6f",
        Verdict::StepUp => "#e0a526",
        Verdict::Deny => "#d1495b",
        Verdict::Revoke => "#6a4c93",
    }
}

/// A readable round number at or above `n`, for an axis maximum.
fn nice_max(n: u64) -> u64 {
    let mut step = 1;
    while step * 10 <= n.max(1) {
        step *= 10;
    }
    [1, 2, 5, 10].into_iter().map(|k| k * step).find(|m| *m >= n.max(1)).unwrap_or(10 * step)
}

fn short_time(text: &str) -> String {
    text.get(..16).unwrap_or(text).replace('T', " ")
}

fn non_allow(counts: &VerdictCounts) -> u64 {
    counts[1] + counts[2] + counts[3]
}

/// One panel of the timeline: non-allow decisions per bucket, stacked by verdict.
fn timeline_panel(svg: &mut String, title: &str, series: &[VerdictCounts], top: f64, max: u64, t: &Timeline) {
    let (left, width, height) = (56.0, 1040.0, 150.0);
    let n = series.len().max(1) as f64;
    let slot = width / n;
    let bar = (slot * 0.8).max(1.0);
    let _ = write!(
        svg,
        r##"<text x="{left}" y="{y}" class="panel">{title}</text>"##,
        y = top - 8.0,
        title = escape(title)
    );
    let base = top + height;
    for (k, label) in [(0.0, "0".to_owned()), (0.5, (max / 2).to_string()), (1.0, max.to_string())] {
        let y = base - k * height;
        let _ = write!(
            svg,
            r##"<line x1="{left}" x2="{x2}" y1="{y}" y2="{y}" class="grid"/><text x="{tx}" y="{ty}" class="tick" text-anchor="end">{label}</text>"##,
            x2 = left + width,
            tx = left - 6.0,
            ty = y + 4.0
        );
    }
    for (i, counts) in series.iter().enumerate() {
        let x = left + i as f64 * slot + (slot - bar) / 2.0;
        let mut y = base;
        for v in [Verdict::StepUp, Verdict::Deny, Verdict::Revoke] {
            let n = counts[crate::tally::verdict_index(v)];
            if n == 0 {
                continue;
            }
            let h = n as f64 / max as f64 * height;
            y -= h;
            let _ = write!(
                svg,
                r##"<rect x="{x:.1}" y="{y:.1}" width="{bar:.1}" height="{h:.1}" fill="{c}"><title>{n} {v}</title></rect>"##,
                c = color(v)
            );
        }
    }
    let end = Timestamp::parse_rfc3339(&t.start)
        .map(|s| Timestamp(s.millis() + t.bucket_s * 1000 * series.len() as i64).to_rfc3339())
        .unwrap_or_default();
    let _ = write!(
        svg,
        r##"<text x="{left}" y="{y}" class="tick">{start}</text><text x="{right}" y="{y}" class="tick" text-anchor="end">{end}</text>"##,
        y = base + 16.0,
        right = left + width,
        start = escape(&short_time(&t.start)),
        end = escape(&short_time(&end))
    );
}

/// Decisions over time under each ruleset, on one scale so they compare.
pub fn timeline(summary: &Summary) -> String {
    let t = &summary.timeline;
    let max = nice_max(t.baseline.iter().chain(&t.candidate).map(non_allow).max().unwrap_or(0));
    let minutes = t.bucket_s / 60;
    let per = if minutes % 60 == 0 { format!("{} h", minutes / 60) } else { format!("{minutes} min") };
    let mut svg = String::new();
    let _ = write!(
        svg,
        r##"<svg class="chart" id="timeline" viewBox="0 0 1120 440" xmlns="http://www.w3.org/2000/svg" role="img" aria-label="decisions over time">"##
    );
    timeline_panel(&mut svg, &format!("baseline: step_up, deny, revoke per {per}"), &t.baseline, 24.0, max, t);
    timeline_panel(&mut svg, &format!("candidate: step_up, deny, revoke per {per}"), &t.candidate, 244.0, max, t);
    let mut x = 56.0;
    for v in [Verdict::StepUp, Verdict::Deny, Verdict::Revoke] {
        let _ = write!(
            svg,
            r##"<rect x="{x}" y="424" width="12" height="12" fill="{c}"/><text x="{tx}" y="434" class="tick">{v}</text>"##,
            c = color(v),
            tx = x + 16.0
        );
        x += 90.0;
    }
    svg.push_str("</svg>");
    svg
}

/// Rules whose findings moved: removed to the left, added to the right.
pub fn rules(rows: &[RuleRow]) -> String {
    let rows: Vec<&RuleRow> = rows.iter().take(12).collect();
    let row_h = 26.0;
    let height = 40.0 + row_h * rows.len().max(1) as f64;
    let max = nice_max(rows.iter().map(|r| r.change.added.max(r.change.removed)).max().unwrap_or(0)) as f64;
    let (label_w, half) = (230.0, 320.0);
    let center = label_w + half + 10.0;
    let mut svg = format!(
        r##"<svg class="chart" id="rules" viewBox="0 0 1120 {height}" xmlns="http://www.w3.org/2000/svg" role="img" aria-label="top rules by changed decisions">"##
    );
    let _ = write!(
        svg,
        r##"<text x="{l}" y="16" class="tick" text-anchor="middle">fires under the baseline only</text><text x="{r}" y="16" class="tick" text-anchor="middle">fires under the candidate only</text><line x1="{center}" x2="{center}" y1="24" y2="{y2}" class="axis"/>"##,
        l = center - half / 2.0,
        r = center + half / 2.0,
        y2 = height - 8.0
    );
    if rows.is_empty() {
        let _ = write!(svg, r##"<text x="{center}" y="48" class="tick" text-anchor="middle">no rule changed</text>"##);
    }
    for (i, row) in rows.iter().enumerate() {
        let y = 30.0 + i as f64 * row_h;
        let (added, removed) = (row.change.added as f64 / max * half, row.change.removed as f64 / max * half);
        let _ = write!(
            svg,
            r##"<text x="{lx}" y="{ty}" class="label" text-anchor="end">{rule}</text><rect x="{rx:.1}" y="{y}" width="{removed:.1}" height="18" fill="#8d99ae"><title>{rn} removed</title></rect><rect x="{center}" y="{y}" width="{added:.1}" height="18" fill="#d1495b"><title>{an} added</title></rect><text x="{cx:.1}" y="{ty}" class="tick">+{an} / -{rn} ({cd} verdicts)</text>"##,
            lx = label_w - 6.0,
            ty = y + 13.0,
            rule = escape(&row.rule),
            rx = center - removed,
            rn = row.change.removed,
            an = row.change.added,
            cd = row.change.changed_decisions,
            cx = center + added + 6.0
        );
    }
    svg.push_str("</svg>");
    svg
}

/// The transition matrix as a heat map: baseline verdicts down, candidate across.
pub fn matrix(summary: &Summary) -> String {
    let cell = 72.0;
    let (left, top) = (100.0, 56.0);
    let off_diagonal_max = summary.transitions.iter().map(|t| t.count).max().unwrap_or(0).max(1) as f64;
    let mut svg = format!(
        r##"<svg class="chart" id="matrix" viewBox="0 0 400 356" style="max-width:440px" xmlns="http://www.w3.org/2000/svg" role="img" aria-label="transition matrix"><text x="{cx}" y="20" class="panel" text-anchor="middle">candidate</text><text x="18" y="{cy}" class="panel" text-anchor="middle" transform="rotate(-90 18 {cy})">baseline</text>"##,
        cx = left + cell * 2.0,
        cy = top + cell * 2.0
    );
    for (j, after) in Verdict::ALL.into_iter().enumerate() {
        let _ = write!(
            svg,
            r##"<text x="{x}" y="{y}" class="label" text-anchor="middle">{after}</text>"##,
            x = left + cell * (j as f64 + 0.5),
            y = top - 10.0
        );
    }
    for (i, before) in Verdict::ALL.into_iter().enumerate() {
        let y = top + cell * i as f64;
        let _ = write!(
            svg,
            r##"<text x="{x}" y="{ty}" class="label" text-anchor="end">{before}</text>"##,
            x = left - 8.0,
            ty = y + cell / 2.0 + 4.0
        );
        for (j, after) in Verdict::ALL.into_iter().enumerate() {
            let n = summary.matrix.get(&before).and_then(|r| r.get(&after)).copied().unwrap_or(0);
            let x = left + cell * j as f64;
            let (fill, ink) = if i == j {
                ("#eef1f4".to_owned(), "#333")
            } else if n == 0 {
                ("#fafafa".to_owned(), "#999")
            } else {
                let k = ((n as f64).ln_1p() / off_diagonal_max.ln_1p()).clamp(0.15, 1.0);
                let c = color(if after > before { after } else { Verdict::Allow });
                (format!("{c}{:02x}", (k * 255.0) as u8), if k > 0.6 { "#fff" } else { "#222" })
            };
            let _ = write!(
                svg,
                r##"<rect x="{x}" y="{y}" width="{cell}" height="{cell}" fill="{fill}" stroke="#fff" stroke-width="2"><title>{before}→{after}: {n}</title></rect><text x="{tx}" y="{ty}" class="cell" fill="{ink}" text-anchor="middle">{n}</text>"##,
                tx = x + cell / 2.0,
                ty = y + cell / 2.0 + 6.0
            );
        }
    }
    svg.push_str("</svg>");
    svg
}
