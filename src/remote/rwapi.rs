//! The Remote Workers API (`google.devtools.remoteworkers.v1test2`), the bot protocol BuildGrid's
//! workers speak: only the `Bots` messages `cbuild worker` needs. No crate publishes generated
//! bindings for it (`bazel-remote-apis` has REAPI and longrunning only), so the messages are
//! declared with prost's derive, field numbers as in `bots.proto` / `worker.proto`; enums are
//! carried as `int32` (same wire format). Calls go through [`super::grpc::Grpc::unary`].
//!
//! ```text
//! CreateBotSession(parent = instance, bot_session{bot_id, status OK, worker{properties, configs: capacity}})
//!   → BotSession{name, leases…}
//! UpdateBotSession(name, bot_session{…, leases with our states}) → BotSession{leases}   (long-poll)
//! lease: PENDING (server) → ACTIVE (bot) → COMPLETED (bot, with status and result = Any(ActionResult))
//!        CANCELLED (server): the bot stops the action and drops the lease
//! ```

use bazel_remote_apis::google::protobuf::{Any, Timestamp};
use bazel_remote_apis::google::rpc::Status;

pub const CREATE: &str = "/google.devtools.remoteworkers.v1test2.Bots/CreateBotSession";
pub const UPDATE: &str = "/google.devtools.remoteworkers.v1test2.Bots/UpdateBotSession";

/// `BotStatus`.
pub const BOT_OK: i32 = 1;

/// `LeaseState`.
pub const PENDING: i32 = 1;
pub const ACTIVE: i32 = 2;
pub const COMPLETED: i32 = 4;
pub const CANCELLED: i32 = 5;

/// `type_url`s of the `Any`s a lease carries.
pub const ACTION_URL: &str = "type.googleapis.com/build.bazel.remote.execution.v2.Action";
pub const DIGEST_URL: &str = "type.googleapis.com/build.bazel.remote.execution.v2.Digest";
pub const ACTION_RESULT_URL: &str = "type.googleapis.com/build.bazel.remote.execution.v2.ActionResult";

#[derive(Clone, PartialEq, prost::Message)]
pub struct BotSession {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub bot_id: String,
    #[prost(int32, tag = "3")]
    pub status: i32,
    #[prost(message, optional, tag = "4")]
    pub worker: Option<Worker>,
    #[prost(message, repeated, tag = "5")]
    pub leases: Vec<Lease>,
    #[prost(message, optional, tag = "6")]
    pub expire_time: Option<Timestamp>,
    #[prost(string, tag = "7")]
    pub version: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Lease {
    #[prost(string, tag = "7")]
    pub id: String,
    #[prost(message, optional, tag = "8")]
    pub payload: Option<Any>,
    #[prost(message, optional, tag = "9")]
    pub result: Option<Any>,
    #[prost(int32, tag = "2")]
    pub state: i32,
    #[prost(message, optional, tag = "3")]
    pub status: Option<Status>,
    #[prost(message, optional, tag = "5")]
    pub expire_time: Option<Timestamp>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Worker {
    #[prost(message, repeated, tag = "1")]
    pub devices: Vec<Device>,
    #[prost(message, repeated, tag = "2")]
    pub properties: Vec<KeyValue>,
    #[prost(message, repeated, tag = "3")]
    pub configs: Vec<KeyValue>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Device {
    #[prost(string, tag = "1")]
    pub handle: String,
    #[prost(message, repeated, tag = "2")]
    pub properties: Vec<KeyValue>,
}

/// `Worker.Property`, `Worker.Config` and `Device.Property` (all `key = 1, value = 2`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct KeyValue {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

impl KeyValue {
    pub fn new(key: &str, value: &str) -> KeyValue {
        KeyValue { key: key.into(), value: value.into() }
    }
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct CreateBotSessionRequest {
    #[prost(string, tag = "1")]
    pub parent: String,
    #[prost(message, optional, tag = "2")]
    pub bot_session: Option<BotSession>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct UpdateBotSessionRequest {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, optional, tag = "2")]
    pub bot_session: Option<BotSession>,
}

/// `msg` packed as an `Any` of `type_url`.
pub fn pack(type_url: &str, msg: &impl prost::Message) -> Any {
    Any { type_url: type_url.into(), value: msg.encode_to_vec() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn a_lease_round_trips_with_the_field_numbers_of_bots_proto() {
        let l = Lease { id: "job-1".into(), state: ACTIVE, ..Default::default() };
        let bytes = l.encode_to_vec();
        // id = field 7 (tag 0x3a), state = field 2 varint (tag 0x10).
        assert_eq!(bytes, [0x10, 0x02, 0x3a, 0x05, b'j', b'o', b'b', b'-', b'1']);
        assert_eq!(Lease::decode(bytes.as_slice()).unwrap(), l);
    }
}
