//! A real ActiveMQ Artemis 2.40 broker for tests: `artemis create` into a
//! scratch directory, acceptors on free loopback ports, login required.
//!
//! The distribution is found at `ARTEMIS_HOME`, or where `.ci/setup` puts it
//! (`~/.cache/apphost/apache-artemis-2.40.0`).

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{Mutex, OnceLock},
    time::Duration,
};

use crate::process::{scratch_dir, spawn_owned, wait_for_log};

pub const USER: &str = "apphost";

pub struct Artemis {
    instance: PathBuf,
    amqp_port: u16,
    core_port: u16,
    password: String,
    child: Mutex<Option<Child>>,
    starts: Mutex<u32>,
}

/// The Artemis distribution to create brokers from.
pub fn artemis_home() -> PathBuf {
    local_install::artemis_home().unwrap_or_else(|missing| panic!("{missing}"))
}

/// Address settings added to every test broker: addresses under `full.` hold
/// one small message and then refuse sends, so tests see a real `Rejected`.
const FULL_ADDRESSES: &str = r#"
         <address-setting match="full.#">
            <max-size-bytes>1</max-size-bytes>
            <address-full-policy>FAIL</address-full-policy>
            <dead-letter-address>DLQ</dead-letter-address>
            <auto-create-queues>true</auto-create-queues>
            <auto-create-addresses>true</auto-create-addresses>
         </address-setting>
"#;

impl Artemis {
    /// The broker shared by every test of this test binary.
    pub fn shared() -> &'static Artemis {
        static SHARED: OnceLock<Artemis> = OnceLock::new();
        SHARED.get_or_init(Artemis::start_private)
    }

    /// A broker of its own, for a test that kills and restarts it.
    pub fn start_private() -> Artemis {
        let instance = scratch_dir("artemis").join("broker");
        let password = uuid::Uuid::new_v4().simple().to_string();
        let out = Command::new(artemis_home().join("bin/artemis"))
            .arg("create")
            .arg(&instance)
            .args(["--user", USER, "--password", &password, "--require-login", "--silent"])
            .args(["--no-web", "--nio", "--no-autotune", "--no-fsync", "--java-memory", "512M"])
            .args(["--no-hornetq-acceptor", "--no-mqtt-acceptor", "--no-stomp-acceptor"])
            .stdin(Stdio::null())
            .output()
            .expect("running `artemis create` (is Java 17 installed?)");
        assert!(out.status.success(), "artemis create failed: {}", String::from_utf8_lossy(&out.stderr));

        let [amqp_port, core_port] = crate::free_ports::<2>();
        let broker_xml = instance.join("etc/broker.xml");
        let xml = std::fs::read_to_string(&broker_xml).expect("reading broker.xml");
        let xml = xml
            .replace("0.0.0.0:61616", &format!("127.0.0.1:{core_port}"))
            .replace("0.0.0.0:5672", &format!("127.0.0.1:{amqp_port}"))
            .replacen("<address-settings>", &format!("<address-settings>{FULL_ADDRESSES}"), 1);
        std::fs::write(&broker_xml, xml).expect("writing broker.xml");

        let broker =
            Artemis { instance, amqp_port, core_port, password, child: Mutex::new(None), starts: Mutex::new(0) };
        broker.start();
        broker
    }

    /// Starts (or restarts, keeping its journal) the broker.
    pub fn start(&self) {
        let mut child = self.child.lock().unwrap();
        if child.is_some() {
            return;
        }
        let mut starts = self.starts.lock().unwrap();
        *starts += 1;
        let log = self.instance.join(format!("run-{starts}.log"));
        let file = std::fs::File::create(&log).expect("broker log");
        let mut command = Command::new(self.instance.join("bin/artemis"));
        command.arg("run").stdin(Stdio::null()).stdout(file.try_clone().unwrap()).stderr(file);
        // As apphost starts its brokers: block producers below 1 GiB free, not at Artemis's
        // 90 % of the disk, which counts reserved blocks and can be reached with gigabytes free.
        command.env("JAVA_ARGS_APPEND", local_install::artemis_java_args());
        *child = Some(spawn_owned(command).expect("starting artemis"));
        drop(child);
        wait_for_log(&log, 0, "AMQ221007", Duration::from_secs(90));
    }

    /// SIGKILL: the broker dies as in a crash; its journal stays.
    pub fn kill(&self) {
        if let Some(mut child) = self.child.lock().unwrap().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn user(&self) -> &str {
        USER
    }

    pub fn password(&self) -> &str {
        &self.password
    }

    pub fn amqp_port(&self) -> u16 {
        self.amqp_port
    }

    /// `amqp://user:password@127.0.0.1:port`, as apphost injects it.
    pub fn amqp_url(&self) -> String {
        format!("amqp://{USER}:{}@127.0.0.1:{}", self.password, self.amqp_port)
    }

    /// The CORE acceptor, for Artemis's own CLI.
    pub fn core_url(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.core_port)
    }
}

impl Drop for Artemis {
    fn drop(&mut self) {
        self.kill();
    }
}
