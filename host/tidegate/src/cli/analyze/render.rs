//! The report as one self-contained HTML page (inline CSS and SVG, a few lines of script that
//! check the page drew every section; nothing is fetched) or as Markdown.

use super::{Chart, Report, Section, Verdict, SECTIONS};
use std::fmt::Write as _;

/// Text safe inside HTML elements and attributes.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
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

fn verdict_word(v: Verdict) -> &'static str {
    match v {
        Verdict::Ok => "ok",
        Verdict::Warn => "look",
        Verdict::Bad => "act",
        Verdict::Unknown => "not measured",
    }
}

fn number(v: f64) -> String {
    if v.abs() >= 100.0 || v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

const WIDTH: f64 = 720.0;

fn bars(labels: &[String], values: &[f64], unit: &str) -> String {
    let row = 24.0;
    let left = 230.0;
    let right = 110.0;
    let height = row * labels.len() as f64 + 30.0;
    let max = values
        .iter()
        .copied()
        .fold(0.0, f64::max)
        .max(f64::MIN_POSITIVE);
    let mut svg = format!(
        r#"<svg class="chart bars" role="img" viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" height="{height}" xmlns="http://www.w3.org/2000/svg"><title>{}</title>"#,
        esc(unit)
    );
    for (i, (l, v)) in labels.iter().zip(values).enumerate() {
        let y = 10.0 + row * i as f64;
        let w = ((WIDTH - left - right) * v / max).max(1.0);
        let label: String = l.chars().take(32).collect();
        let _ = write!(
            svg,
            r#"<text x="{x}" y="{ty}" text-anchor="end" class="label">{label}</text><rect class="mark" x="{left}" y="{y}" width="{w:.1}" height="{h}"><title>{full}: {val} {unit}</title></rect><text x="{vx:.1}" y="{ty}" class="value">{val}</text>"#,
            x = left - 8.0,
            ty = y + 15.0,
            label = esc(&label),
            h = row - 6.0,
            full = esc(l),
            val = number(*v),
            unit = esc(unit),
            vx = left + w + 6.0,
        );
    }
    let _ = write!(
        svg,
        r#"<text x="{left}" y="{}" class="axis">{}</text></svg>"#,
        height - 4.0,
        esc(unit)
    );
    svg
}

fn line(points: &[(f64, f64)], unit: &str) -> String {
    let (h, pad) = (220.0, 40.0);
    let max_x = points.iter().map(|p| p.0).fold(1.0, f64::max);
    let max_y = points
        .iter()
        .map(|p| p.1)
        .fold(0.0, f64::max)
        .max(f64::MIN_POSITIVE);
    let px = |x: f64| pad + (WIDTH - 2.0 * pad) * x / max_x;
    let py = |y: f64| h - pad - (h - 2.0 * pad) * y / max_y;
    let mut svg = format!(
        r#"<svg class="chart line" role="img" viewBox="0 0 {WIDTH} {h}" width="{WIDTH}" height="{h}" xmlns="http://www.w3.org/2000/svg"><title>{}</title>"#,
        esc(unit)
    );
    let _ = write!(
        svg,
        r#"<line class="axis" x1="{pad}" y1="{b}" x2="{r}" y2="{b}"/><line class="axis" x1="{pad}" y1="{t}" x2="{pad}" y2="{b}"/><text x="{pad}" y="{lt}" class="axis">{top} {u}</text><text x="{r}" y="{lb}" text-anchor="end" class="axis">{mx} s</text>"#,
        b = h - pad,
        r = WIDTH - pad,
        t = pad,
        lt = pad - 8.0,
        top = number(max_y),
        u = esc(unit),
        lb = h - pad + 18.0,
        mx = number(max_x),
    );
    let path: Vec<String> = points
        .iter()
        .map(|(x, y)| format!("{:.1},{:.1}", px(*x), py(*y)))
        .collect();
    let _ = write!(
        svg,
        r#"<polyline class="mark" points="{}"/>"#,
        path.join(" ")
    );
    for (x, y) in points {
        let _ = write!(
            svg,
            r#"<circle class="mark" cx="{:.1}" cy="{:.1}" r="3"><title>{} s: {} {}</title></circle>"#,
            px(*x),
            py(*y),
            number(*x),
            number(*y),
            esc(unit)
        );
    }
    svg.push_str("</svg>");
    svg
}

fn chart(c: &Chart) -> String {
    match c {
        Chart::Bars {
            labels,
            values,
            unit,
        } => bars(labels, values, unit),
        Chart::Line { points, unit } => line(points, unit),
    }
}

fn table(s: &Section) -> String {
    if s.rows.is_empty() {
        return String::new();
    }
    let mut t = String::from("<table><thead><tr>");
    for c in &s.columns {
        let _ = write!(t, "<th>{}</th>", esc(c));
    }
    t.push_str("</tr></thead><tbody>");
    for r in &s.rows {
        t.push_str("<tr>");
        for v in r {
            let _ = write!(t, "<td>{}</td>", esc(v));
        }
        t.push_str("</tr>");
    }
    t.push_str("</tbody></table>");
    t
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2rem;max-width:60rem;color:#1d2330}\
h1{font-size:1.5rem}h2{font-size:1.15rem;margin-bottom:.3rem}\
section{border-top:1px solid #ccd;padding:.8rem 0}\
.verdict{font-weight:600}.badge{display:inline-block;padding:0 .5rem;border-radius:.6rem;margin-right:.5rem;color:#fff}\
.ok .badge{background:#2b8a3e}.warn .badge{background:#c27c0e}.bad .badge{background:#c92a2a}.unknown .badge{background:#868e96}\
.advice{color:#444}table{border-collapse:collapse;font-size:.85rem;margin-top:.5rem}\
td,th{border:1px solid #dde;padding:.2rem .4rem;text-align:left;vertical-align:top}\
svg .mark{fill:#3b5bdb}svg polyline.mark{fill:none;stroke:#3b5bdb;stroke-width:2}\
svg text{font-size:12px;fill:#333}svg .axis{stroke:#999;fill:#666}nav a{margin-right:.6rem}";

/// The page checks itself once loaded: every section there with its verdict, every chart with
/// something drawn; the outcome goes to `<body data-check>` and problems to the console.
fn script() -> String {
    let ids: Vec<String> = SECTIONS.iter().map(|s| format!("\"{s}\"")).collect();
    format!(
        "(function(){{var ids=[{}];var problems=[];\
ids.forEach(function(id){{var s=document.getElementById(id);\
if(!s){{problems.push('missing section '+id);return;}}\
if(!s.querySelector('.verdict')||!s.querySelector('.advice'))problems.push('no verdict in '+id);}});\
var charts=document.querySelectorAll('svg.chart');\
Array.prototype.forEach.call(charts,function(c){{if(!c.querySelector('.mark')||c.getBBox().width<=0)\
problems.push('empty chart in '+c.closest('section').id);}});\
document.body.setAttribute('data-charts',String(charts.length));\
document.body.setAttribute('data-check',problems.length?'failed':'ok');\
if(problems.length)console.error('report check: '+problems.join('; '));}})();",
        ids.join(",")
    )
}

/// The HTML page.
pub fn html(r: &Report) -> String {
    let mut p = String::new();
    let _ = write!(
        p,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\"><title>TideGate analysis of {db}</title><style>{STYLE}</style></head><body><h1>Why is {db} slow? TideGate analysis, {at}</h1><nav>",
        db = esc(&r.database),
        at = esc(&r.generated_at)
    );
    for s in &r.sections {
        let _ = write!(p, "<a href=\"#{}\">{}</a>", s.id, esc(s.title));
    }
    p.push_str("</nav>");
    for s in &r.sections {
        let class = match s.verdict {
            Verdict::Ok => "ok",
            Verdict::Warn => "warn",
            Verdict::Bad => "bad",
            Verdict::Unknown => "unknown",
        };
        let _ = write!(
            p,
            "<section id=\"{id}\" class=\"{class}\" data-verdict=\"{class}\"><h2>{title}</h2><p class=\"verdict\"><span class=\"badge\">{word}</span>{summary}</p><p class=\"advice\">{advice}</p>{chart}{table}</section>",
            id = s.id,
            title = esc(s.title),
            word = verdict_word(s.verdict),
            summary = esc(&s.summary),
            advice = esc(&s.advice),
            chart = s.chart.as_ref().map(chart).unwrap_or_default(),
            table = table(s),
        );
    }
    let _ = writeln!(p, "<script>{}</script></body></html>", script());
    p
}

/// The same as Markdown (plots as their data).
pub fn markdown(r: &Report) -> String {
    let mut m = format!(
        "# TideGate analysis of {}\n\n{}\n",
        r.database, r.generated_at
    );
    for s in &r.sections {
        let _ = write!(
            m,
            "\n## {}\n\n**{}**: {}\n\n_{}_\n",
            s.title,
            verdict_word(s.verdict),
            s.summary,
            s.advice
        );
        if !s.rows.is_empty() {
            let _ = write!(
                m,
                "\n| {} |\n|{}|\n",
                s.columns.join(" | "),
                vec!["---"; s.columns.len()].join("|")
            );
            for row in &s.rows {
                let cells: Vec<String> = row.iter().map(|c| c.replace('|', "\\|")).collect();
                let _ = writeln!(m, "| {} |", cells.join(" | "));
            }
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_and_every_section_is_written() {
        let mut sections = Vec::new();
        for id in SECTIONS {
            let mut s = Section::new(id, "t");
            s.summary = "<script>alert(1)</script>".into();
            s.chart = Some(Chart::Bars {
                labels: vec!["a&b".into()],
                values: vec![2.0],
                unit: "ms".into(),
            });
            sections.push(s);
        }
        let r = Report {
            generated_at: "now".into(),
            database: "db".into(),
            sections,
        };
        let page = html(&r);
        assert!(!page.contains("<script>alert"), "escaped");
        assert!(page.contains("a&amp;b"));
        for id in SECTIONS {
            assert!(page.contains(&format!("<section id=\"{id}\"")), "{id}");
        }
        assert!(
            !page.contains(" src=") && !page.contains("<link"),
            "nothing fetched"
        );
        let md = markdown(&r);
        assert!(md.contains("## t") && md.contains("**ok**"), "{md}");
    }
}
