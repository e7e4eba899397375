//! The documents `apphost publish` writes, built as a tree in the order
//! they are read and emitted by saphyr (the YAML crate apphost reads its own
//! file with), which quotes what a YAML 1.1 reader would take for a number,
//! a boolean or null (`"no"`, `"8080"`).

use std::borrow::Cow;

use saphyr::{Mapping, Scalar, Yaml, YamlEmitter};

/// A YAML node; maps keep the order keys were added in.
#[derive(Debug, Clone)]
pub enum Node {
    Str(String),
    Int(i64),
    Bool(bool),
    List(Vec<Node>),
    Map(Vec<(String, Node)>),
}

impl Node {
    pub fn str(s: impl Into<String>) -> Self {
        Node::Str(s.into())
    }

    pub fn strs<S: Into<String>>(items: impl IntoIterator<Item = S>) -> Self {
        Node::List(items.into_iter().map(|s| Node::Str(s.into())).collect())
    }

    pub fn map() -> Self {
        Node::Map(Vec::new())
    }

    /// Adds `key: value` to a map (a no-op on anything else).
    pub fn with(mut self, key: &str, value: Node) -> Self {
        if let Node::Map(entries) = &mut self {
            entries.push((key.to_owned(), value));
        }
        self
    }

    /// Adds `key: value` when there is a value.
    pub fn with_some(self, key: &str, value: Option<Node>) -> Self {
        match value {
            Some(value) => self.with(key, value),
            None => self,
        }
    }

    fn to_yaml(&self) -> Yaml<'_> {
        match self {
            Node::Str(s) => Yaml::Value(Scalar::String(Cow::Borrowed(s))),
            Node::Int(i) => Yaml::Value(Scalar::Integer(*i)),
            Node::Bool(b) => Yaml::Value(Scalar::Boolean(*b)),
            Node::List(items) => Yaml::Sequence(items.iter().map(Node::to_yaml).collect()),
            Node::Map(entries) => {
                let mut map = Mapping::new();
                for (k, v) in entries {
                    map.insert(Yaml::Value(Scalar::String(Cow::Borrowed(k))), v.to_yaml());
                }
                Yaml::Mapping(map)
            }
        }
    }

    /// The document as YAML text, after a comment header, ending in a newline.
    pub fn document(&self, header: &str) -> String {
        let mut out: String = header.lines().map(|l| format!("# {l}\n").replace("# \n", "#\n")).collect();
        out.push_str(&self.body());
        out
    }

    /// The document as YAML text, ending in a newline.
    pub fn body(&self) -> String {
        let mut body = String::new();
        YamlEmitter::new(&mut body).dump(&self.to_yaml()).expect("writing YAML to a String");
        // The emitter starts a document with `---`; a header or a separator says where one starts instead.
        let mut body = body.strip_prefix("---\n").map(str::to_owned).unwrap_or(body);
        body.push('\n');
        body
    }
}
