//! The reports of `apphost test` as a JUnit XML suite, for CI systems.

use super::Report;

/// The reports as a JUnit XML test suite.
pub fn junit(reports: &[Report]) -> String {
    let esc = |s: &str| s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;");
    let failures = reports.iter().filter(|r| !r.passed()).count();
    let total: f64 = reports.iter().map(|r| r.seconds).sum();
    let mut xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuite name=\"apphost\" tests=\"{}\" failures=\"{failures}\" time=\"{total:.3}\">\n",
        reports.len()
    );
    for r in reports {
        xml.push_str(&format!(
            "  <testcase classname=\"apphost.scenarios\" name=\"{}\" time=\"{:.3}\">\n",
            esc(&r.scenario),
            r.seconds
        ));
        if !r.passed() {
            let message = r
                .failure
                .clone()
                .unwrap_or_else(|| format!("lost {}, duplicate effects {}", r.lost, r.duplicate_effects));
            xml.push_str(&format!("    <failure message=\"{}\"/>\n", esc(&message)));
        }
        xml.push_str(&format!("    <system-out>{}</system-out>\n", esc(&serde_json::to_string(r).unwrap_or_default())));
        xml.push_str("  </testcase>\n");
    }
    xml.push_str("</testsuite>\n");
    xml
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn junit_counts_failures_and_escapes() {
        let ok = Report { scenario: "smoke".into(), acknowledged: 3, delivered: 3, ..Default::default() };
        let bad = Report { scenario: "db<restart>".into(), lost: 2, ..Default::default() };
        let xml = junit(&[ok, bad]);
        assert!(xml.contains(r#"tests="2" failures="1""#), "{xml}");
        assert!(xml.contains("db&lt;restart&gt;"), "{xml}");
        assert!(xml.contains(r#"<failure message="lost 2, duplicate effects 0"/>"#), "{xml}");
    }
}
