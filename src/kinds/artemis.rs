//! `kind: artemis`: an ActiveMQ Artemis 2.40.0 broker (the official
//! `apache/activemq-artemis` image's interface on docker; a broker instance
//! created from the local distribution otherwise).

use super::{Field, Init, Launch, LaunchContext, Need, Placement, ResourceKind, Step, Trouble, user};
use crate::{plan::Instance, runtime::StartError, topology::Check, topology::Resource};

pub struct Artemis;

/// The free disk below which the brokers apphost starts block producers (see
/// [`local_install::ARTEMIS_MIN_DISK_FREE`]).
pub const MIN_DISK_FREE: u64 = local_install::ARTEMIS_MIN_DISK_FREE;

impl ResourceKind for Artemis {
    fn name(&self) -> &'static str {
        "artemis"
    }

    fn placement(&self) -> Placement {
        Placement::Either
    }

    fn default_image(&self) -> Option<&'static str> {
        Some("apache/activemq-artemis:2.40.0")
    }

    fn default_ports(&self) -> &'static [(&'static str, Option<u16>)] {
        &[("amqp", Some(5672)), ("core", Some(61616))]
    }

    /// An AMQP open handshake: it passes once the acceptor takes clients, and
    /// fails again when the broker stops answering (paused, wedged), which a
    /// log line seen once or a TCP connect cannot tell.
    fn default_check(&self, _: &Resource) -> Option<Check> {
        Some(Check::Amqp { port: "amqp".into() })
    }

    fn fields(&self) -> &'static [Field] {
        &[Field::Image, Field::User]
    }

    fn has_password(&self) -> bool {
        true
    }

    fn own_env(&self, me: &Instance, _: &super::EnvContext<'_>) -> Vec<(String, String)> {
        vec![
            ("ARTEMIS_USER".into(), user(&me.resource)),
            ("ARTEMIS_PASSWORD".into(), me.password.clone().unwrap_or_default()),
            // `bin/artemis` appends this to the JVM's arguments, in the distribution and in
            // the official image alike; `brokerconfig.*` system properties override broker.xml.
            ("JAVA_ARGS_APPEND".into(), local_install::artemis_java_args()),
        ]
    }

    /// The AMQP acceptor, with the user apphost created.
    fn connection_string(&self, broker: &Instance) -> Option<String> {
        Some(format!(
            "amqp://{}:{}@{}:{}",
            user(&broker.resource),
            broker.password.clone().unwrap_or_default(),
            broker.address,
            broker.port("amqp").unwrap_or_default()
        ))
    }

    fn data_path(&self) -> Option<&'static str> {
        Some("/var/lib/artemis-instance")
    }

    /// The image's `artemis create` into `/var/lib/artemis-instance` (about
    /// a second of a JVM, twice that beside two PostgreSQL set-ups). The
    /// journal, bindings, paging and large messages go to `/tmp/artemis-data`
    /// of the container, writable by the official image's `artemis` user.
    fn reusable_setup(&self) -> Option<super::Setup> {
        Some(super::Setup {
            path: "/var/lib/artemis-instance",
            inputs: &["ARTEMIS_USER", "ARTEMIS_PASSWORD", "ANONYMOUS_LOGIN", "EXTRA_ARGS"],
            complete: &[
                "bin/artemis",
                "etc/artemis.profile",
                "etc/broker.xml",
                "etc/bootstrap.xml",
                "etc/management.xml",
                "etc/artemis-users.properties",
                "etc/artemis-roles.properties",
                "etc/login.config",
                "etc/jolokia-access.xml",
            ],
            data_apart: &[(
                "JAVA_ARGS_APPEND",
                "-Dbrokerconfig.journalDirectory=/tmp/artemis-data/journal \
                 -Dbrokerconfig.bindingsDirectory=/tmp/artemis-data/bindings \
                 -Dbrokerconfig.pagingDirectory=/tmp/artemis-data/paging \
                 -Dbrokerconfig.largeMessagesDirectory=/tmp/artemis-data/large-messages \
                 -Dbrokerconfig.nodeManagerLockDirectory=/tmp/artemis-data",
            )],
            // The JVM's classes, parsed and verified once, mapped at the next
            // start (AppCDS): 0.6 of the broker's 4 CPU-seconds to active,
            // 0.45 s of its start on 2 cores. Java 13 and later, so the
            // official image's JVM and the local one both read it.
            warm: Some(super::Warm {
                file: "apphost.jsa",
                var: "JAVA_ARGS_APPEND",
                // Its warnings (a class it cannot archive) off: hundreds of lines.
                use_it: "-XX:SharedArchiveFile=/var/lib/artemis-instance/apphost.jsa -Xlog:cds=off -Xlog:cds+dynamic=off",
                make_it: "-XX:ArchiveClassesAtExit=/var/lib/artemis-instance/apphost.jsa -Xlog:cds=off -Xlog:cds+dynamic=off",
            }),
        })
    }

    fn starts_first(&self) -> bool {
        true
    }

    fn troubles(&self) -> &'static [Trouble] {
        &[
            // The disk scan, when free space falls below min-disk-free (what apphost sets).
            (
                "AMQ224128",
                "disk full: Artemis blocks producers (less than 1 GiB free, its min-disk-free); free disk space",
            ),
            // The disk scan of a broker configured by a share of the disk instead (max-disk-usage).
            ("AMQ222210", "disk full: Artemis blocks producers (beyond its max-disk-usage); free disk space"),
            // A producer blocked on an address.
            ("AMQ222212", "disk full: Artemis blocks producers; free disk space"),
        ]
    }

    fn is_broker(&self) -> bool {
        true
    }

    fn launch(&self, instance: &Instance, at: &LaunchContext<'_>) -> Result<Launch, StartError> {
        let home = local_install::artemis_home().map_err(super::missing)?;
        local_install::which("java").ok_or_else(|| {
            StartError::new("Java is not installed; Artemis needs Java 17")
                .help("install it (`apt-get install openjdk-17-jre-headless`) or run the broker with `runtime: docker`")
        })?;
        let broker = at.files.join("broker");
        let (core, amqp) = (instance.port("core"), instance.port("amqp"));
        let (user_name, password) = (user(&instance.resource), instance.password.clone().unwrap_or_default());
        let create = create_args(&broker, &user(&instance.resource));
        Ok(Launch {
            program: broker.join("bin/artemis"),
            args: vec!["run".into()],
            cwd: None,
            user: None,
            uses_files: true,
            init: Some(Init {
                done: broker.join("bin/artemis"),
                say: format!("creating an Artemis broker instance in {}", broker.display()),
                steps: vec![Step::Run {
                    what: "`artemis create`",
                    program: home.join("bin/artemis"),
                    args: create,
                    stdin: None,
                }],
            }),
            prepare: vec![
                Step::Rewrite {
                    path: broker.join("etc/broker.xml"),
                    edit: Box::new(move |xml| set_acceptor_ports(xml, core, amqp)),
                    private: false,
                },
                Step::Rewrite {
                    path: broker.join("etc/artemis-users.properties"),
                    edit: Box::new(move |users| set_password(users, &user_name, &password)),
                    private: true,
                },
            ],
            tools: None,
        })
    }

    fn local_needs(&self) -> Vec<Need> {
        vec![
            Need {
                what: "Java",
                found: local_install::which("java").map(|p| p.display().to_string()).ok_or("not found".into()),
                fix: "apt-get install openjdk-17-jre-headless",
            },
            Need {
                what: "Artemis distribution",
                found: local_install::artemis_home().map(|p| p.display().to_string()).map_err(|m| m.message),
                fix: "run `.ci/setup` (fetches Artemis 2.40.0 from Maven Central) or set ARTEMIS_HOME",
            },
        ]
    }
}

/// `artemis create`'s arguments for an instance in `broker` whose user is
/// `user`. A throwaway password is on its command line (which other users
/// can read in /proc); the real one goes into the users file before every
/// start, readable by its owner alone.
pub(crate) fn create_args(broker: &std::path::Path, user: &str) -> Vec<String> {
    let mut create = vec!["create".to_owned(), broker.display().to_string()];
    create.extend(["--user".into(), user.to_owned()]);
    create.extend(["--password".into(), uuid::Uuid::new_v4().simple().to_string()]);
    create.extend(
        ["--require-login", "--silent", "--no-web", "--nio", "--no-autotune", "--java-memory", "512M"]
            .map(str::to_owned),
    );
    create.extend(["--no-hornetq-acceptor", "--no-mqtt-acceptor", "--no-stomp-acceptor"].map(str::to_owned));
    create
}

/// `users` (an `artemis-users.properties`) with `user`'s password set to
/// `password`, in plain text (what Artemis reads when it is not `ENC(…)`).
fn set_password(users: &str, user: &str, password: &str) -> String {
    let mut lines: Vec<String> = users
        .lines()
        .filter(|line| line.split_once('=').is_none_or(|(name, _)| name.trim() != user))
        .map(str::to_owned)
        .collect();
    lines.push(format!("{user} = {password}"));
    lines.join("\n") + "\n"
}

/// Points the `artemis` (CORE) and `amqp` acceptors of `xml` at loopback ports.
pub(crate) fn set_acceptor_ports(xml: &str, core: Option<u16>, amqp: Option<u16>) -> String {
    let mut xml = xml.to_owned();
    for (name, port) in [("artemis", core), ("amqp", amqp)] {
        let Some(port) = port else { continue };
        let re = regex::Regex::new(&format!(r#"(<acceptor name="{name}">tcp://)[^:/?]+:\d+"#)).expect("valid regex");
        xml = re.replace(&xml, format!("${{1}}127.0.0.1:{port}")).into_owned();
    }
    xml
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_goes_into_the_users_file_not_on_a_command_line() {
        let users = "## comment\napphost = ENC(1234)\nother = x\n";
        assert_eq!(set_password(users, "apphost", "s3cret"), "## comment\nother = x\napphost = s3cret\n");

        let t =
            crate::topology::parse_str(std::path::Path::new("apphost.yaml"), "resources:\n  mq: { kind: artemis }\n")
                .unwrap();
        let instances = crate::plan::plan(&t, Err(String::new()), "s", |_| Ok("s3cret-pw".into()), &[]).unwrap();
        let files = std::env::temp_dir().join("apphost-artemis-plan");
        let binaries = std::collections::HashMap::new();
        let at = LaunchContext { root: std::path::Path::new("."), binaries: &binaries, files };
        // Without Java or a distribution here the plan cannot be made; nothing to check then.
        let Ok(launch) = Artemis.launch(&instances[0], &at) else { return };
        let init = launch.init.expect("an init");
        for step in init.steps.iter().chain(&launch.prepare) {
            if let Step::Run { args, .. } = step {
                assert!(!args.iter().any(|a| a.contains("s3cret-pw")), "the password is on a command line: {args:?}");
            }
        }
        assert!(launch.prepare.iter().any(
            |s| matches!(s, Step::Rewrite { private: true, path, .. } if path.ends_with("artemis-users.properties"))
        ));
    }

    #[test]
    fn acceptors_move_to_loopback_ports() {
        let xml = r#"<acceptor name="artemis">tcp://0.0.0.0:61616?protocols=CORE</acceptor>
<acceptor name="amqp">tcp://0.0.0.0:5672?protocols=AMQP</acceptor>"#;
        let xml = set_acceptor_ports(xml, Some(1111), Some(2222));
        assert!(xml.contains("tcp://127.0.0.1:1111?protocols=CORE"), "{xml}");
        assert!(xml.contains("tcp://127.0.0.1:2222?protocols=AMQP"), "{xml}");
    }
}
