//! Topology errors as miette diagnostics: file, line, column, a label on the
//! span, and a help line that says what to do.

use miette::{Diagnostic, NamedSource, SourceSpan};

/// One problem in the file.
#[derive(Debug, Clone, thiserror::Error, Diagnostic)]
#[error("{message}")]
pub struct Diag {
    pub message: String,
    #[label("{label}")]
    pub span: SourceSpan,
    pub label: String,
    #[help]
    pub help: Option<String>,
}

impl Diag {
    pub fn new(message: impl Into<String>, span: SourceSpan, label: impl Into<String>) -> Self {
        Self { message: message.into(), span, label: label.into(), help: None }
    }

    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }
}

/// Every problem found in one file, rendered against its source.
#[derive(Debug, thiserror::Error, Diagnostic)]
#[error("{} has {} problem{}", .file, .problems.len(), if .problems.len() == 1 { "" } else { "s" })]
#[diagnostic(code(apphost::topology), help("`apphost check` validates the file without starting anything"))]
pub struct InvalidTopology {
    pub file: String,
    #[source_code]
    pub source_code: NamedSource<String>,
    #[related]
    pub problems: Vec<Diag>,
}

#[derive(Debug, thiserror::Error, Diagnostic)]
pub enum LoadError {
    #[error("cannot read `{file}`: {source}")]
    #[diagnostic(code(apphost::topology::read), help("run apphost where `apphost.yaml` is, or pass `-f FILE`"))]
    Read { file: String, source: std::io::Error },
    #[error("`{file}` is {what}; a topology file is a regular file of at most {limit} bytes")]
    #[diagnostic(
        code(apphost::topology::size),
        help("point `-f` at the apphost.yaml you meant; a stack this large is better split into several apps")
    )]
    TooLarge { file: String, what: String, limit: u64 },
    #[error(transparent)]
    #[diagnostic(transparent)]
    Invalid(Box<InvalidTopology>),
}
