//! The benchmark's latency chart: each open-loop run's end-to-end latency
//! by percentile, as HDR histograms are usually drawn (the x axis stretches
//! the tail: 90 %, 99 %, 99.9 % are equally far apart), written as SVG.

use hdrhistogram::Histogram;
use plotters::prelude::*;

/// `series`: a label and its histogram (microseconds).
pub fn latency_by_percentile(series: &[(String, &Histogram<u64>)], title: &str) -> Result<String, String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (800, 420)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        // x is "nines", -log10(1 - p): 0 is p0, 1 is p90, 2 is p99, 3 is p99.9.
        let top = series.iter().map(|(_, h)| h.value_at_quantile(0.9999) as f64 / 1000.0).fold(1.0, f64::max);
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(56)
            .build_cartesian_2d(0.0..4.0f64, 0.0..top * 1.1)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc("percentile")
            .y_desc("milliseconds")
            .x_labels(5)
            .x_label_formatter(&|x| match x.round() as i32 {
                0 => "0".into(),
                1 => "90".into(),
                2 => "99".into(),
                3 => "99.9".into(),
                _ => "99.99".into(),
            })
            .draw()
            .map_err(|e| e.to_string())?;
        for (i, (label, h)) in series.iter().enumerate() {
            let colour = Palette99::pick(i).to_rgba();
            let points: Vec<(f64, f64)> = (0..=400)
                .map(|k| {
                    let x = k as f64 / 100.0;
                    let p = 1.0 - 10f64.powf(-x);
                    (x, h.value_at_quantile(p.min(0.9999)) as f64 / 1000.0)
                })
                .collect();
            chart
                .draw_series(LineSeries::new(points, colour.stroke_width(2)))
                .map_err(|e| e.to_string())?
                .label(label.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], colour.stroke_width(2)));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE)
            .border_style(BLACK)
            .draw()
            .map_err(|e| e.to_string())?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chart_is_an_svg_with_its_labels() {
        let mut h = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).unwrap();
        for v in 1..=10_000u64 {
            h.record(v * 10).unwrap();
        }
        let svg = latency_by_percentile(&[("100/s".into(), &h)], "end to end").unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("<text") && svg.contains("percentile"), "{svg}");
        assert!(svg.contains("100/s") && svg.contains("<polyline"), "{svg}");
    }
}
