//! Version skew between an older and a newer definition of one service, both ways: the newer
//! adds a method, a push, and trailing optional fields to a request and an answer (postcard
//! and JSON). The older peer keeps working; the new method gets a typed "unknown method".

mod common;

use std::time::Duration;

use common::*;
use ferry_rpc::{Context, RpcConfig, RpcError, Status};

mod v1 {
    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
    pub struct Query {
        pub text: String,
        pub limit: u32,
    }

    #[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
    pub struct Answer {
        pub hits: Vec<String>,
    }

    #[ferry_rpc::service]
    pub trait Search {
        fn find(q: Query) -> Answer;
        #[codec(json)]
        fn find_json(q: Query) -> Answer;
        #[notification]
        fn ping(n: u32);
    }
}

mod v2 {
    use serde::{Deserialize, Serialize};

    /// Two fields appended: an `Option` and a `Vec` (`#[serde(default)]` for JSON).
    #[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
    pub struct Query {
        pub text: String,
        pub limit: u32,
        #[serde(default)]
        pub fuzzy: Option<bool>,
        #[serde(default)]
        pub tags: Vec<String>,
    }

    #[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
    pub struct Answer {
        pub hits: Vec<String>,
        #[serde(default)]
        pub took_us: Option<u64>,
    }

    #[ferry_rpc::service]
    pub trait Search {
        fn find(q: Query) -> Answer;
        #[codec(json)]
        fn find_json(q: Query) -> Answer;
        #[notification]
        fn ping(n: u32);
        /// New in v2.
        fn suggest(prefix: String) -> Vec<String>;
        /// New in v2: engine → editor.
        #[push]
        fn reindexed(n: u32);
    }
}

struct Old;
impl v1::Search for Old {
    fn find(&self, _cx: &Context<'_>, q: v1::Query) -> Result<v1::Answer, Status> {
        Ok(v1::Answer {
            hits: vec![q.text, q.limit.to_string()],
        })
    }
    fn find_json(&self, cx: &Context<'_>, q: v1::Query) -> Result<v1::Answer, Status> {
        self.find(cx, q)
    }
    fn ping(&self, _cx: &Context<'_>, _n: u32) {}
}

struct New;
impl v2::Search for New {
    fn find(&self, _cx: &Context<'_>, q: v2::Query) -> Result<v2::Answer, Status> {
        Ok(v2::Answer {
            hits: vec![
                q.text,
                q.limit.to_string(),
                format!("fuzzy={:?} tags={:?}", q.fuzzy, q.tags),
            ],
            took_us: Some(12),
        })
    }
    fn find_json(&self, cx: &Context<'_>, q: v2::Query) -> Result<v2::Answer, Status> {
        self.find(cx, q)
    }
    fn ping(&self, cx: &Context<'_>, n: u32) {
        // v2 answers a ping with a push the v1 client does not know.
        let _ = v2::SearchPusher::new(cx.connection()).reindexed(&n);
    }
    fn suggest(&self, _cx: &Context<'_>, prefix: String) -> Result<Vec<String>, Status> {
        Ok(vec![format!("{prefix}1")])
    }
}

#[test]
fn newer_client_talks_to_older_server() {
    let dir = TestDir::new("skew-new-old");
    let _server = serve(&dir, "rpc-skew-a", v1::SearchServer::new(Old));
    let client = v2::SearchClient::from_client(connect(&dir, "rpc-skew-a"));
    let q = v2::Query {
        text: "needle".into(),
        limit: 5,
        fuzzy: Some(true),
        tags: vec!["a".into(), "b".into()],
    };
    // The old server ignores the appended fields; its answer lacks `took_us`: None.
    let expected = v2::Answer {
        hits: vec!["needle".into(), "5".into()],
        took_us: None,
    };
    assert_eq!(client.find(&q).unwrap(), expected);
    assert_eq!(client.find_json(&q).unwrap(), expected);
    // The new method: a typed error naming it, not a hang.
    match client.suggest(&"ne".to_owned()) {
        Err(RpcError::UnknownMethod {
            service, method, ..
        }) => assert_eq!((service, method), ("Search", "suggest")),
        other => panic!("expected UnknownMethod, got {other:?}"),
    }
    client.ping(&1).unwrap();
    assert_eq!(client.find(&q).unwrap(), expected);
}

#[test]
fn older_client_talks_to_newer_server() {
    let dir = TestDir::new("skew-old-new");
    let _server = serve(&dir, "rpc-skew-b", v2::SearchServer::new(New));
    struct NoPushes;
    impl v1::SearchPushes for NoPushes {}
    let client = v1::SearchClient::connect_with_pushes(
        "rpc-skew-b",
        client_config(dir.path()),
        RpcConfig::default(),
        NoPushes,
    )
    .unwrap();
    let q = v1::Query {
        text: "needle".into(),
        limit: 5,
    };
    // The new server reads the missing fields as None / empty; the old client ignores
    // `took_us`.
    let expected = v1::Answer {
        hits: vec!["needle".into(), "5".into(), "fuzzy=None tags=[]".into()],
    };
    assert_eq!(client.find(&q).unwrap(), expected);
    assert_eq!(client.find_json(&q).unwrap(), expected);
    // A push of a method the old client does not know is dropped; the connection goes on.
    client.ping(&7).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(client.find(&q).unwrap(), expected);
    assert_eq!(client.client().transport().stats().notification_panics, 0);
}
