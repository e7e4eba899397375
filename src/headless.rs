//! Headless output, docker-compose style: every line prefixed with its
//! resource's name, coloured per resource when the output is a terminal.

use std::{collections::HashMap, io::Write};

use tokio::sync::broadcast::{self, error::RecvError};
use tokio_util::sync::CancellationToken;

use crate::logs::{LogLine, Stream};

const COLOURS: [u8; 6] = [36, 33, 32, 35, 34, 31];

pub struct Printer {
    colour: bool,
    width: usize,
    colours: HashMap<String, u8>,
}

/// Whether to colour: a terminal, unless NO_COLOR; or CLICOLOR_FORCE / FORCE_COLOR.
pub fn use_colour() -> bool {
    if std::env::var_os("NO_COLOR").is_some() {
        return false;
    }
    std::env::var_os("CLICOLOR_FORCE").is_some()
        || std::env::var_os("FORCE_COLOR").is_some()
        || std::io::IsTerminal::is_terminal(&std::io::stdout())
}

impl Printer {
    pub fn new(names: &[String]) -> Self {
        let width = names.iter().map(String::len).chain(["apphost".len()]).max().unwrap_or(8);
        let colours = names.iter().enumerate().map(|(i, n)| (n.clone(), COLOURS[i % COLOURS.len()])).collect();
        Self { colour: use_colour(), width, colours }
    }

    pub fn format(&self, line: &LogLine) -> String {
        let name = &*line.resource;
        let prefix = format!("{name:<width$} |", width = self.width);
        let text = match line.stream {
            Stream::System => format!("● {}", line.text),
            _ => line.text.clone(),
        };
        if !self.colour {
            return format!("{prefix} {text}");
        }
        let colour = self.colours.get(name).copied().unwrap_or(37);
        match line.stream {
            Stream::System => format!("\x1b[{colour};1m{prefix}\x1b[0m \x1b[2m{text}\x1b[0m"),
            Stream::Stderr => format!("\x1b[{colour}m{prefix}\x1b[0m {text}"),
            Stream::Stdout => format!("\x1b[{colour}m{prefix}\x1b[0m {text}"),
        }
    }

    /// Prints the lines of `rx` (a subscription to the log store) as they come, until `stop`.
    pub async fn run(self, mut rx: broadcast::Receiver<LogLine>, stop: CancellationToken) {
        let mut out = std::io::stdout();
        loop {
            let line = tokio::select! {
                _ = stop.cancelled() => break,
                line = rx.recv() => line,
            };
            match line {
                Ok(line) => {
                    let _ = writeln!(out, "{}", self.format(&line));
                }
                Err(RecvError::Lagged(n)) => {
                    let _ = writeln!(
                        out,
                        "{:<width$} | ● {n} lines not shown: output faster than the terminal",
                        "apphost",
                        width = self.width
                    );
                }
                Err(RecvError::Closed) => break,
            }
        }
        // What arrived before the stop still gets printed.
        while let Ok(line) = rx.try_recv() {
            let _ = writeln!(out, "{}", self.format(&line));
        }
        let _ = out.flush();
    }
}
