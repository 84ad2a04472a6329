//! One conformance suite, run against every engine: memory and Redis.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use herald::{
    config::{EngineConfig, EngineKind},
    engine::{
        Dispatcher, Engine, HistoryPage, Keyed, Kick, Once, SharedDispatcher, memory::MemoryEngine,
        redis::RedisEngine,
    },
    protocol::{ChannelName, EventName, HistoryQuery, HistorySpec, JsonData, Publication},
};

use crate::{helpers::eventually, redis_server::RedisServer};

#[derive(Debug, Clone, PartialEq)]
enum Seen {
    Publication(String, String),
    Disconnect(String),
}

#[derive(Default)]
struct Recorder(Mutex<Vec<Seen>>);

impl Recorder {
    fn seen(&self) -> Vec<Seen> {
        self.0.lock().unwrap().clone()
    }
}

impl Dispatcher for Recorder {
    fn dispatch(&self, p: Publication) -> usize {
        self.0.lock().unwrap().push(Seen::Publication(
            p.channel.to_string(),
            p.data.as_json().unwrap_or_default().to_owned(),
        ));
        1
    }
    fn disconnect(&self, channel: &str, _kick: Kick) -> usize {
        self.0
            .lock()
            .unwrap()
            .push(Seen::Disconnect(channel.to_owned()));
        1
    }
    fn notify_gap(&self, _channel: &ChannelName) {}
}

fn publication(channel: &str, n: usize) -> Publication {
    Publication {
        channel: ChannelName::parse(channel, 128).unwrap(),
        event: EventName::parse("e").unwrap(),
        data: JsonData::from_json(&n.to_string()).unwrap(),
        ts: None,
        position: None,
        history: None,
    }
}

async fn conformance(engine: Arc<dyn Engine>, recorder: Arc<Recorder>) {
    let recorder_ = Arc::clone(&recorder);
    let engine_ = Arc::clone(&engine);
    eventually("the engine to connect", move || engine_.is_connected()).await;
    let channel = ChannelName::parse("conformance", 128).unwrap();
    engine.subscribe(channel.clone()).await.unwrap();

    // Order is kept within a channel, across batches.
    engine
        .publish((0..50).map(|n| publication("conformance", n)).collect())
        .await
        .unwrap();
    engine
        .publish((50..100).map(|n| publication("conformance", n)).collect())
        .await
        .unwrap();
    let expected: Vec<Seen> = (0..100)
        .map(|n| Seen::Publication("conformance".into(), n.to_string()))
        .collect();
    eventually("100 publications", || recorder_.seen().len() >= 100).await;
    assert_eq!(recorder.seen()[..100], expected[..]);

    // A disconnect request reaches the dispatcher as such, not as a publication.
    engine
        .disconnect(channel.clone(), Kick::User)
        .await
        .unwrap();
    let recorder_ = Arc::clone(&recorder);
    eventually("the disconnect", move || recorder_.seen().len() == 101).await;
    assert_eq!(recorder.seen()[100], Seen::Disconnect("conformance".into()));

    // A keyed publication goes out once per key; a repeat is answered with
    // the first attempt's answer and not delivered again.
    let keyed = |n: usize, key: &str, answer: u64| Keyed {
        publication: publication("conformance", n),
        key: key.into(),
        answer,
    };
    let first = engine
        .publish_once(vec![keyed(200, "k1", 7), keyed(201, "k2", 8)])
        .await
        .unwrap();
    assert_eq!(first, [Once::Published, Once::Published]);
    let again = engine
        .publish_once(vec![keyed(200, "k1", 99), keyed(202, "k3", 9)])
        .await
        .unwrap();
    assert_eq!(again, [Once::Duplicate(7), Once::Published]);
    let recorder_ = Arc::clone(&recorder);
    eventually("3 keyed publications", move || {
        recorder_.seen().len() == 104
    })
    .await;
    assert_eq!(
        recorder.seen()[101..],
        ["200", "201", "202"].map(|n| Seen::Publication("conformance".into(), n.into()))
    );

    history_conformance(&*engine).await;

    // Node stats round-trip.
    let stats = herald::engine::NodeStats {
        node_id: "node-x".into(),
        uptime_seconds: 7,
        connections: 3,
        subscriptions: 4,
        channels: 2,
        draining: false,
        engine_connected: true,
        top_channels: vec![herald::engine::TopChannel {
            channel: "conformance".into(),
            subscribers: 2,
        }],
    };
    engine.announce(&stats, 5).await.unwrap();
    let nodes = engine.nodes().await.unwrap();
    assert!(nodes.contains(&stats), "{nodes:?}");

    // Unsubscribing is accepted (its effect on delivery is engine-specific).
    engine.unsubscribe(channel);
    tokio::time::sleep(Duration::from_millis(10)).await;
}

/// Streams: dense offsets from 1, trimming to `size`, every read shape,
/// keyed publishing on a history channel, the position of a new stream.
async fn history_conformance(engine: &dyn Engine) {
    let spec = HistorySpec {
        size: 5,
        ttl_secs: 60,
        meta_ttl_secs: 600,
    };
    let stream = |n: usize| Publication {
        history: Some(spec),
        ..publication("conformance.h", n)
    };
    let channel = ChannelName::parse("conformance.h", 128).unwrap();
    let read = |since: Option<u64>, limit: Option<usize>, reverse: bool| {
        engine.history(
            channel.clone(),
            spec,
            HistoryQuery {
                since,
                limit,
                reverse,
            },
        )
    };
    let empty = read(None, None, false).await.unwrap();
    assert_eq!(empty.position.offset, 0);
    assert!(empty.publications.is_empty());
    engine.publish((1..=7).map(stream).collect()).await.unwrap();
    let keyed = Keyed {
        publication: stream(8),
        key: "h-8".into(),
        answer: 1,
    };
    let outcomes = engine
        .publish_once(vec![keyed.clone(), keyed])
        .await
        .unwrap();
    assert_eq!(outcomes, [Once::Published, Once::Duplicate(1)]);
    let offsets = |page: &HistoryPage| -> Vec<u64> {
        page.publications
            .iter()
            .map(|p| {
                // Data n was published as offset n.
                assert_eq!(
                    p.data.as_json(),
                    Some(p.offset().unwrap().to_string().as_str())
                );
                p.offset().unwrap()
            })
            .collect()
    };
    let all = read(None, None, false).await.unwrap();
    assert_eq!(
        (all.position.offset, &all.position.epoch),
        (8, &empty.position.epoch)
    );
    assert_eq!(offsets(&all), [4, 5, 6, 7, 8], "trimmed to size");
    for (since, limit, reverse, expected) in [
        (Some(5), None, false, vec![6, 7, 8]),
        (Some(5), Some(2), false, vec![6, 7]),
        (None, Some(2), true, vec![8, 7]),
        (Some(6), None, true, vec![8, 7]),
        (Some(8), None, false, vec![]),
        (None, Some(0), false, vec![]),
        (Some(1), Some(10), false, vec![4, 5, 6, 7, 8]),
    ] {
        let page = read(since, limit, reverse).await.unwrap();
        assert_eq!(offsets(&page), expected, "{since:?} {limit:?} {reverse}");
        assert_eq!(page.position, all.position);
    }
}

#[tokio::test]
async fn memory_engine_conforms() {
    let recorder = Arc::new(Recorder::default());
    let engine = Arc::new(MemoryEngine::new(Arc::clone(&recorder) as SharedDispatcher));
    conformance(engine, recorder).await;
}

#[tokio::test]
async fn redis_engine_conforms() {
    let redis = RedisServer::start();
    let recorder = Arc::new(Recorder::default());
    let config = EngineConfig {
        kind: EngineKind::Redis,
        url: redis.url(),
        ..EngineConfig::default()
    };
    let engine = Arc::new(
        RedisEngine::start(&config, 65536, Arc::clone(&recorder) as SharedDispatcher).unwrap(),
    );
    conformance(engine, recorder).await;
}
