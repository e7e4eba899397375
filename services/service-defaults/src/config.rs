//! Settings from the environment, as `docs/contracts.md` fixes them:
//! `ConnectionStrings__<name>`, `PORT` / `HTTP_PORTS`, and each service's own
//! optional tuning knobs. Every failure names the variable and what was expected.

use std::{fmt, str::FromStr, time::Duration};

use url::Url;

/// A value that must never reach a log line: `Debug` and `Display` mask it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    pub fn new(value: T) -> Self {
        Self(value)
    }

    /// The secret itself; call only where it is handed to a client library.
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(****)")
    }
}

/// A connection string as given, kept secret, with a masked form for logs.
#[derive(Clone, Debug)]
pub struct ConnectionString {
    pub name: String,
    pub url: Secret<Url>,
}

impl ConnectionString {
    pub fn parse(name: &str, raw: &str) -> Result<Self, String> {
        let url = Url::parse(raw.trim()).map_err(|e| format!("not a URL ({e})"))?;
        if url.host_str().is_none_or(str::is_empty) {
            return Err("the URL has no host".into());
        }
        Ok(Self { name: name.to_owned(), url: Secret::new(url) })
    }

    /// The URL with its password replaced by `****`, safe to log.
    pub fn masked(&self) -> String {
        mask_url(self.url.expose())
    }
}

/// `scheme://user:****@host:port/path` for any URL.
pub fn mask_url(url: &Url) -> String {
    let mut shown = url.clone();
    if shown.password().is_some() {
        let _ = shown.set_password(Some("****"));
    }
    shown.to_string()
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("environment variable `{var}` is not set: {expected}")]
    Missing { var: String, expected: String },
    #[error("environment variable `{var}` is malformed: {problem}; expected {expected}")]
    Malformed { var: String, problem: String, expected: String },
}

/// Where variables come from; the process environment in production, a map in tests.
pub trait Env {
    fn var(&self, name: &str) -> Option<String>;
}

/// The process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }
}

impl<S: std::hash::BuildHasher> Env for std::collections::HashMap<String, String, S> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).filter(|v| !v.is_empty()).cloned()
    }
}

/// `ConnectionStrings__<name>`, also accepted with `-` written as `_`.
pub fn connection_string(env: &impl Env, name: &str, example: &str) -> Result<ConnectionString, ConfigError> {
    let primary = format!("ConnectionStrings__{name}");
    let alternate = format!("ConnectionStrings__{}", name.replace('-', "_"));
    let (var, raw) = match env.var(&primary) {
        Some(raw) => (primary, raw),
        None => match env.var(&alternate) {
            Some(raw) => (alternate, raw),
            None => {
                return Err(ConfigError::Missing {
                    var: primary,
                    expected: format!("a connection string such as `{example}`"),
                });
            }
        },
    };
    ConnectionString::parse(name, &raw).map_err(|problem| ConfigError::Malformed {
        var,
        problem,
        expected: format!("a URL such as `{example}`"),
    })
}

/// The HTTP port: `PORT`, else the first of `HTTP_PORTS` (ASP.NET's name), else `default`.
pub fn http_port(env: &impl Env, default: u16) -> Result<u16, ConfigError> {
    if env.var("PORT").is_some() {
        return parse_var(env, "PORT", "a TCP port number (0 picks a free one)", default);
    }
    match env.var("HTTP_PORTS") {
        Some(list) => {
            let first = list.split([';', ',']).next().unwrap_or_default().trim().to_owned();
            first.parse().map_err(|_| ConfigError::Malformed {
                var: "HTTP_PORTS".into(),
                problem: format!("`{first}` is not a port number"),
                expected: "a list of port numbers separated by `;`".into(),
            })
        }
        None => Ok(default),
    }
}

/// An optional variable parsed with `FromStr`, `default` when unset.
pub fn parse_var<T: FromStr>(env: &impl Env, var: &str, expected: &str, default: T) -> Result<T, ConfigError>
where
    T::Err: fmt::Display,
{
    match env.var(var) {
        None => Ok(default),
        Some(raw) => raw.trim().parse().map_err(|e: T::Err| ConfigError::Malformed {
            var: var.into(),
            problem: format!("`{raw}`: {e}"),
            expected: expected.into(),
        }),
    }
}

/// An optional duration such as `250ms`, `5s`, `2m`, or a bare number of milliseconds.
pub fn duration_var(env: &impl Env, var: &str, default: Duration) -> Result<Duration, ConfigError> {
    match env.var(var) {
        None => Ok(default),
        Some(raw) => parse_duration(&raw).ok_or_else(|| ConfigError::Malformed {
            var: var.into(),
            problem: format!("`{raw}` is not a duration"),
            expected: "a duration such as `250ms`, `5s` or `2m`".into(),
        }),
    }
}

/// `250ms`, `1.5s`, `2m`, `1h`, or a bare number of milliseconds.
pub fn parse_duration(raw: &str) -> Option<Duration> {
    let raw = raw.trim();
    let split = raw.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(raw.len());
    let (number, unit) = raw.split_at(split);
    let number: f64 = number.parse().ok()?;
    let seconds = match unit.trim() {
        "" | "ms" => number / 1000.0,
        "s" => number,
        "m" => number * 60.0,
        "h" => number * 3600.0,
        _ => return None,
    };
    Duration::try_from_secs_f64(seconds).ok()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn connection_string_accepts_the_underscore_spelling() {
        let e = env(&[("ConnectionStrings__sender_db", "postgres://u:p@127.0.0.1:5432/db")]);
        let cs = connection_string(&e, "sender-db", "postgres://…").unwrap();
        assert_eq!(cs.url.expose().port(), Some(5432));
        assert_eq!(cs.masked(), "postgres://u:****@127.0.0.1:5432/db");
    }

    #[test]
    fn missing_connection_string_names_the_variable() {
        let err =
            connection_string(&env(&[]), "broker", "amqp://user:password@127.0.0.1:5672").unwrap_err().to_string();
        assert!(err.contains("`ConnectionStrings__broker`"), "{err}");
        assert!(err.contains("amqp://user:password@127.0.0.1:5672"), "{err}");
    }

    #[test]
    fn malformed_connection_string_never_echoes_the_value() {
        let e = env(&[("ConnectionStrings__db", "not a url with s3cret")]);
        let err = connection_string(&e, "db", "postgres://…").unwrap_err().to_string();
        assert!(err.contains("malformed"), "{err}");
        assert!(!err.contains("s3cret"), "{err}");
    }

    #[test]
    fn secrets_are_masked_in_debug_output() {
        let e = env(&[("ConnectionStrings__db", "postgres://u:hunter2@h/db")]);
        let cs = connection_string(&e, "db", "").unwrap();
        assert!(!format!("{cs:?}").contains("hunter2"));
    }

    #[test]
    fn port_comes_from_port_then_http_ports() {
        assert_eq!(http_port(&env(&[("PORT", "8080")]), 1).unwrap(), 8080);
        assert_eq!(http_port(&env(&[("HTTP_PORTS", "8081;8082")]), 1).unwrap(), 8081);
        assert_eq!(http_port(&env(&[]), 1).unwrap(), 1);
        let err = http_port(&env(&[("PORT", "eighty")]), 1).unwrap_err().to_string();
        assert!(err.contains("`PORT`") && err.contains("eighty"), "{err}");
    }

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("250"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("5 parsecs"), None);
        assert_eq!(parse_duration("-1s"), None);
    }
}
