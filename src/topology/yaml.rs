//! A thin layer over saphyr's spanned YAML: typed accessors that fail with a
//! [`Diag`] pointing at the offending node, and a key check with "did you mean".

use miette::SourceSpan;
use saphyr::{LoadableYamlNode, MarkedYaml, Scalar, YamlData};

use super::diagnostics::Diag;

/// A YAML node and the byte range it covers in the file.
#[derive(Clone, Copy)]
pub struct Node<'a> {
    pub yaml: &'a MarkedYaml<'a>,
    pub span: SourceSpan,
}

/// Char-index → byte-offset table for the source (saphyr counts chars, miette bytes).
pub struct Source<'s> {
    text: &'s str,
    byte_of_char: Vec<usize>,
}

impl<'s> Source<'s> {
    pub fn new(text: &'s str) -> Self {
        let mut byte_of_char: Vec<usize> = text.char_indices().map(|(b, _)| b).collect();
        byte_of_char.push(text.len());
        Self { text, byte_of_char }
    }

    pub fn byte(&self, char_index: usize) -> usize {
        self.byte_of_char.get(char_index).copied().unwrap_or(self.text.len())
    }

    pub fn parse(&self) -> Result<Vec<MarkedYaml<'s>>, Diag> {
        MarkedYaml::load_from_str(self.text).map_err(|e| {
            let at = self.byte(e.marker().index());
            Diag::new(format!("this is not valid YAML: {}", e.info()), (at, 0).into(), "here")
        })
    }

    pub fn node<'a>(&self, yaml: &'a MarkedYaml<'a>) -> Node<'a> {
        let start = self.byte(yaml.span.start.index());
        let mut end = self.byte(yaml.span.end.index()).max(start);
        // Block mappings end where the next thing starts; trim the trailing blank.
        while end > start && self.text.as_bytes()[end - 1].is_ascii_whitespace() {
            end -= 1;
        }
        Node { yaml, span: (start, end - start).into() }
    }
}

impl<'a> Node<'a> {
    pub fn is_null(&self) -> bool {
        matches!(self.yaml.data, YamlData::Value(Scalar::Null))
    }

    fn kind(&self) -> &'static str {
        match &self.yaml.data {
            YamlData::Value(Scalar::Null) => "nothing (null)",
            YamlData::Value(Scalar::Boolean(_)) => "a boolean",
            YamlData::Value(Scalar::Integer(_)) => "a number",
            YamlData::Value(Scalar::FloatingPoint(_)) => "a number",
            YamlData::Value(Scalar::String(_)) => "a string",
            YamlData::Sequence(_) => "a list",
            YamlData::Mapping(_) => "a mapping",
            _ => "something else",
        }
    }

    pub fn wrong_type(&self, expected: &str) -> Diag {
        Diag::new(format!("expected {expected}, found {}", self.kind()), self.span, format!("expected {expected}"))
    }

    /// The entries of a mapping, keys as strings, in file order.
    pub fn mapping(&self, src: &Source<'_>) -> Result<Vec<(String, Node<'a>, Node<'a>)>, Diag> {
        match &self.yaml.data {
            YamlData::Mapping(map) => map
                .iter()
                .map(|(k, v)| {
                    let key = src.node(k);
                    let name = key.scalar_text().ok_or_else(|| key.wrong_type("a name"))?;
                    Ok((name, key, src.node(v)))
                })
                .collect(),
            _ => Err(self.wrong_type("a mapping")),
        }
    }

    pub fn sequence(&self, src: &Source<'_>) -> Result<Vec<Node<'a>>, Diag> {
        match &self.yaml.data {
            YamlData::Sequence(items) => Ok(items.iter().map(|i| src.node(i)).collect()),
            _ => Err(self.wrong_type("a list")),
        }
    }

    /// A scalar's text: strings as they are, numbers and booleans as written.
    pub fn scalar_text(&self) -> Option<String> {
        match &self.yaml.data {
            YamlData::Value(Scalar::String(s)) => Some(s.to_string()),
            YamlData::Value(Scalar::Integer(i)) => Some(i.to_string()),
            YamlData::Value(Scalar::FloatingPoint(f)) => Some(f.to_string()),
            YamlData::Value(Scalar::Boolean(b)) => Some(b.to_string()),
            YamlData::Representation(s, _, _) => Some(s.to_string()),
            _ => None,
        }
    }

    pub fn string(&self) -> Result<String, Diag> {
        match &self.yaml.data {
            YamlData::Value(Scalar::String(s)) => Ok(s.to_string()),
            _ => Err(self.wrong_type("a string")),
        }
    }

    pub fn boolean(&self) -> Result<bool, Diag> {
        match &self.yaml.data {
            YamlData::Value(Scalar::Boolean(b)) => Ok(*b),
            _ => Err(self.wrong_type("`true` or `false`")),
        }
    }

    pub fn integer(&self, min: i64, max: i64) -> Result<i64, Diag> {
        match &self.yaml.data {
            YamlData::Value(Scalar::Integer(i)) if (min..=max).contains(i) => Ok(*i),
            YamlData::Value(Scalar::Integer(i)) => Err(Diag::new(
                format!("{i} is out of range"),
                self.span,
                format!("expected a whole number from {min} to {max}"),
            )),
            _ => Err(self.wrong_type(&format!("a whole number from {min} to {max}"))),
        }
    }

    pub fn strings(&self, src: &Source<'_>) -> Result<Vec<(String, SourceSpan)>, Diag> {
        self.sequence(src)?
            .into_iter()
            .map(|n| {
                n.scalar_text().filter(|_| !n.is_null()).map(|s| (s, n.span)).ok_or_else(|| n.wrong_type("a string"))
            })
            .collect()
    }
}

/// Fails on the first key not in `known`, suggesting the closest known key.
pub fn check_keys(entries: &[(String, Node<'_>, Node<'_>)], known: &[&str], what: &str) -> Result<(), Diag> {
    for (key, node, _) in entries {
        if !known.contains(&key.as_str()) {
            let mut diag = Diag::new(format!("unknown key `{key}` in {what}"), node.span, "unknown key");
            diag.help = Some(match did_you_mean(key, known.iter().copied()) {
                Some(best) => format!("did you mean `{best}`?"),
                None => format!("known keys: {}", known.join(", ")),
            });
            return Err(diag);
        }
    }
    Ok(())
}

/// The closest candidate, if it is close enough to be a likely typo.
pub fn did_you_mean<'c>(word: &str, candidates: impl Iterator<Item = &'c str>) -> Option<&'c str> {
    candidates
        .map(|c| (strsim::jaro_winkler(word, c), c))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}
