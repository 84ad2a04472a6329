//! Real `redis-server` processes for tests: one server, or a 3-master
//! cluster, on free ports, stopped when dropped. Never uses a Redis someone
//! else started. Faults are real too: SIGSTOP/SIGCONT (a hung server),
//! `DEBUG SLEEP` (a slow one), SIGKILL and restart (a crash).

use std::{
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

fn free_port() -> u16 {
    // Cluster nodes also listen on port + 10000, so stay below 55535.
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if port < 55_000 && TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}

fn redis_server() -> &'static str {
    assert!(
        Command::new("redis-server")
            .arg("--version")
            .output()
            .is_ok(),
        "redis-server is not installed: run `apt-get install -y redis-server` (tests/run.sh does this)"
    );
    "redis-server"
}

/// One redis-server process.
pub struct RedisServer {
    pub port: u16,
    dir: PathBuf,
    extra: Vec<String>,
    child: Option<Child>,
}

impl RedisServer {
    pub fn start() -> Self {
        Self::start_with(free_port(), Vec::new())
    }

    /// A server that accepts `DEBUG SLEEP` from local clients.
    pub fn start_with_debug() -> Self {
        Self::start_with(
            free_port(),
            vec!["--enable-debug-command".into(), "local".into()],
        )
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("server not running").id();
        let status = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill {signal} {pid} failed");
    }

    /// Stops the process (SIGSTOP): sockets stay open, nothing answers.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Resumes a paused process (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    /// Sends `DEBUG SLEEP secs` on its own connection and returns once the
    /// command is written; the thread ends when Redis answers.
    pub fn debug_sleep(&self, secs: f64) -> std::thread::JoinHandle<()> {
        use std::io::{Read, Write};
        let mut tcp = std::net::TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        let arg = secs.to_string();
        let command = format!(
            "*3\r\n$5\r\nDEBUG\r\n$5\r\nSLEEP\r\n${}\r\n{arg}\r\n",
            arg.len()
        );
        tcp.write_all(command.as_bytes()).unwrap();
        std::thread::spawn(move || {
            let mut reply = [0u8; 5];
            tcp.read_exact(&mut reply).unwrap();
            assert_eq!(&reply, b"+OK\r\n", "DEBUG SLEEP refused");
        })
    }

    fn start_with(port: u16, extra: Vec<String>) -> Self {
        let dir = std::env::temp_dir().join(format!("herald-redis-{port}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut server = Self {
            port,
            dir,
            extra,
            child: None,
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let child = Command::new(redis_server())
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        wait_for_ping(self.port);
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server abruptly (like a crash); `restart` brings it back on the same port.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// A synchronous connection for assertions (PUBSUB NUMSUB, PUBLISH, ...).
    pub fn client(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .unwrap()
            .get_connection()
            .unwrap()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn wait_for_ping(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let url = format!("redis://127.0.0.1:{port}");
    loop {
        let ok = redis::Client::open(url.as_str())
            .and_then(|c| c.get_connection())
            .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c));
        if ok.is_ok() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "redis-server on {port} did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A Redis Cluster of three masters (and, if asked, one replica each).
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    pub fn start() -> Self {
        Self::start_with(0)
    }

    /// Three masters with one replica each; a master that stays down for
    /// the 2 s node timeout is replaced by its replica.
    pub fn start_with_replicas() -> Self {
        Self::start_with(1)
    }

    fn start_with(replicas: usize) -> Self {
        let nodes: Vec<RedisServer> = (0..3 * (1 + replicas))
            .map(|_| {
                let port = free_port();
                let config = format!("nodes-{port}.conf");
                RedisServer::start_with(
                    port,
                    vec![
                        "--cluster-enabled".into(),
                        "yes".into(),
                        "--cluster-config-file".into(),
                        config,
                        "--cluster-node-timeout".into(),
                        "2000".into(),
                    ],
                )
            })
            .collect();
        let addresses: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let status = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "redis-cli --cluster create failed");
        let cluster = Self { nodes };
        cluster.wait_ok();
        if replicas > 0 {
            cluster.wait_replicas();
        }
        cluster
    }

    /// Waits until every replica has synced with its master.
    fn wait_replicas(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        for node in &self.nodes {
            loop {
                let info: String = redis::cmd("INFO")
                    .arg("replication")
                    .query(&mut node.client())
                    .unwrap();
                if info.contains("role:master") || info.contains("master_link_status:up") {
                    break;
                }
                assert!(Instant::now() < deadline, "replicas did not sync");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// The slot map seen by the first node that answers:
    /// `(first slot, last slot, master port)`.
    pub fn slots(&self) -> Vec<(u16, u16, u16)> {
        for node in &self.nodes {
            let Ok(mut conn) = redis::Client::open(node.url()).and_then(|c| c.get_connection())
            else {
                continue;
            };
            let Ok(redis::Value::Array(ranges)) = redis::cmd("CLUSTER")
                .arg("SLOTS")
                .query::<redis::Value>(&mut conn)
            else {
                continue;
            };
            let int = |v: &redis::Value| match v {
                redis::Value::Int(n) => u16::try_from(*n).unwrap(),
                other => panic!("not an int: {other:?}"),
            };
            return ranges
                .iter()
                .map(|range| {
                    let redis::Value::Array(fields) = range else {
                        panic!("bad CLUSTER SLOTS reply")
                    };
                    let redis::Value::Array(master) = &fields[2] else {
                        panic!("bad CLUSTER SLOTS reply")
                    };
                    (int(&fields[0]), int(&fields[1]), int(&master[1]))
                })
                .collect();
        }
        panic!("no cluster node answers")
    }

    /// The slot of `key` (`CLUSTER KEYSLOT`).
    pub fn slot_of(&self, key: &str) -> u16 {
        redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query(&mut self.nodes[0].client())
            .unwrap()
    }

    /// The port of the master serving `slot` now.
    pub fn master_of(&self, slot: u16) -> u16 {
        self.slots()
            .into_iter()
            .find(|(first, last, _)| (*first..=*last).contains(&slot))
            .map(|(_, _, port)| port)
            .expect("slot not served")
    }

    /// Moves `slot` (holding no keys) from the master on `from` to the one
    /// on `to`, the way `redis-cli --cluster reshard` does.
    pub fn migrate_slot(&self, slot: u16, from: u16, to: u16) {
        let node = |port: u16| self.nodes.iter().find(|n| n.port == port).unwrap();
        let id = |port: u16| -> String {
            redis::cmd("CLUSTER")
                .arg("MYID")
                .query(&mut node(port).client())
                .unwrap()
        };
        let (from_id, to_id) = (id(from), id(to));
        let setslot = |port: u16, args: &[&str]| {
            let _: () = redis::cmd("CLUSTER")
                .arg("SETSLOT")
                .arg(slot)
                .arg(args)
                .query(&mut node(port).client())
                .unwrap();
        };
        setslot(to, &["IMPORTING", &from_id]);
        setslot(from, &["MIGRATING", &to_id]);
        setslot(to, &["NODE", &to_id]);
        setslot(from, &["NODE", &to_id]);
        for other in &self.nodes {
            if other.port != from && other.port != to {
                let _: redis::RedisResult<()> = redis::cmd("CLUSTER")
                    .arg("SETSLOT")
                    .arg(slot)
                    .arg("NODE")
                    .arg(&to_id)
                    .query(&mut other.client());
            }
        }
    }

    /// The node listening on `port`.
    pub fn node(&self, port: u16) -> &RedisServer {
        self.nodes.iter().find(|n| n.port == port).unwrap()
    }

    /// The node listening on `port`.
    pub fn node_mut(&mut self, port: u16) -> &mut RedisServer {
        self.nodes.iter_mut().find(|n| n.port == port).unwrap()
    }

    fn wait_ok(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        for node in &self.nodes {
            loop {
                let info: String = redis::cmd("CLUSTER")
                    .arg("INFO")
                    .query(&mut node.client())
                    .unwrap();
                if info.contains("cluster_state:ok") {
                    break;
                }
                assert!(Instant::now() < deadline, "cluster did not become ok");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// Total SHARDNUMSUB of `channel` over every master.
    pub fn shard_subscribers(&self, channel: &str) -> u64 {
        self.nodes
            .iter()
            .map(|n| self.shard_subscribers_at(n.port, channel))
            .sum()
    }

    /// SHARDNUMSUB of `channel` on the node listening on `port`.
    pub fn shard_subscribers_at(&self, port: u16, channel: &str) -> u64 {
        let (_, count): (String, u64) = redis::cmd("PUBSUB")
            .arg("SHARDNUMSUB")
            .arg(channel)
            .query(&mut self.node(port).client())
            .unwrap();
        count
    }

    /// Waits until `channel` has one subscriber on the node listening on
    /// `port`; panics after `limit` (bounded only to catch a hang).
    pub async fn wait_shard_subscriber(&self, port: u16, channel: &str, limit: Duration) {
        let started = Instant::now();
        while self.shard_subscribers_at(port, channel) != 1 {
            assert!(
                started.elapsed() < limit,
                "{channel} never had a subscriber on {port}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sharded channels with subscribers, over every master.
    pub fn shard_channels(&self) -> Vec<String> {
        self.nodes
            .iter()
            .flat_map(|n| {
                redis::cmd("PUBSUB")
                    .arg("SHARDCHANNELS")
                    .query::<Vec<String>>(&mut n.client())
                    .unwrap()
            })
            .collect()
    }
}
