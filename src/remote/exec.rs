//! Remote execution over REAPI v2 (`--remote-executor grpc://…`): input trees in the CAS, the
//! `Execute` call with its operation stream, cancellation. What an action *is* (the order a worker
//! runs) is decided in `execution::remote_exec`; this module only speaks the protocol.
//!
//! ```text
//! Tree (paths → file/symlink nodes) ─► Directory messages (canonical: sorted names) ─► root digest
//! FindMissingBlobs ─► Batch/ByteStream uploads of what is missing (local CAS blobs, messages)
//! Execute(action digest) ─► stream of Operations ─► done: ExecuteResponse (or WaitExecution after a drop)
//! dropped before done (^C) ─► CancelOperation(name)
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bazel_remote_apis::build::bazel::remote::execution::v2 as re;
use bazel_remote_apis::google::longrunning as lr;
use prost::Message;

use super::error::{RemoteError, Result};
use super::grpc::{proto_digest, Grpc};
use crate::model::digest::Digest;

/// One node of an input tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Node {
    File { digest: Digest, size: u64, executable: bool },
    Symlink { target: String },
}

/// An input root being built: workspace-style relative paths (`a/b/c`) → nodes.
#[derive(Clone, Debug, Default)]
pub struct Tree {
    nodes: BTreeMap<String, Node>,
}

impl Tree {
    pub fn add(&mut self, path: &str, node: Node) {
        self.nodes.insert(path.to_string(), node);
    }

    /// The root `Directory`'s digest and every `Directory` message (to upload), bottom-up.
    pub fn encode(&self) -> (re::Digest, Vec<Vec<u8>>) {
        #[derive(Default)]
        struct Dir {
            files: BTreeMap<String, (Digest, u64, bool)>,
            links: BTreeMap<String, String>,
            dirs: BTreeMap<String, Dir>,
        }
        let mut root = Dir::default();
        for (path, node) in &self.nodes {
            let mut parts: Vec<&str> = path.split('/').collect();
            let name = parts.pop().unwrap_or_default().to_string();
            let mut d = &mut root;
            for p in parts {
                d = d.dirs.entry(p.to_string()).or_default();
            }
            match node {
                Node::File { digest, size, executable } => {
                    d.files.insert(name, (digest.clone(), *size, *executable));
                }
                Node::Symlink { target } => {
                    d.links.insert(name, target.clone());
                }
            }
        }
        fn enc(d: &Dir, out: &mut Vec<Vec<u8>>) -> re::Digest {
            let msg = re::Directory {
                files: d
                    .files
                    .iter()
                    .map(|(n, (dg, size, x))| re::FileNode {
                        name: n.clone(),
                        digest: Some(proto_digest(dg, *size)),
                        is_executable: *x,
                        ..Default::default()
                    })
                    .collect(),
                directories: d
                    .dirs
                    .iter()
                    .map(|(n, sub)| re::DirectoryNode { name: n.clone(), digest: Some(enc(sub, out)) })
                    .collect(),
                symlinks: d
                    .links
                    .iter()
                    .map(|(n, t)| re::SymlinkNode { name: n.clone(), target: t.clone(), ..Default::default() })
                    .collect(),
                ..Default::default()
            };
            let bytes = msg.encode_to_vec();
            let dg = proto_digest(&Digest::of_bytes(&bytes), bytes.len() as u64);
            out.push(bytes);
            dg
        }
        let mut out = Vec::new();
        let root = enc(&root, &mut out);
        (root, out)
    }
}

/// Largest input tree a worker accepts (entries), and deepest path.
pub const MAX_TREE_ENTRIES: usize = 1_000_000;
pub const MAX_TREE_DEPTH: usize = 64;

/// Reads the tree under `root` back (a worker): paths → nodes. Names are checked (no `/`, `.`,
/// `..`, empty, NUL), so a path never leaves the directory it is materialised in; a tree that is
/// too large or deep is refused.
pub fn read_tree(grpc: &Grpc, root: &re::Digest) -> Result<Tree> {
    let mut t = Tree::default();
    let mut todo = vec![(String::new(), root.clone(), 0usize)];
    let bad = |what: String| RemoteError::Client { reason: format!("the action's input tree {what}") };
    while let Some((prefix, d, depth)) = todo.pop() {
        if depth > MAX_TREE_DEPTH {
            return Err(bad(format!("is deeper than {MAX_TREE_DEPTH} directories")));
        }
        let dir = re::Directory::decode(grpc.get_bytes(&d)?.as_slice())
            .map_err(|e| bad(format!("has a directory that is not a Directory message: {e}")))?;
        let join = |n: &str| -> Result<String> {
            if n.is_empty() || n == "." || n == ".." || n.contains('/') || n.contains('\0') {
                return Err(bad(format!("has an invalid name `{}`", n.escape_debug())));
            }
            Ok(if prefix.is_empty() { n.to_string() } else { format!("{prefix}/{n}") })
        };
        for f in &dir.files {
            let dg = f.digest.as_ref().ok_or_else(|| bad("has a file without digest".into()))?;
            let digest = Digest::from_hex(&dg.hash).map_err(|_| bad(format!("has a bad digest `{}`", dg.hash)))?;
            let size = u64::try_from(dg.size_bytes).map_err(|_| bad("has a negative size".into()))?;
            t.add(&join(&f.name)?, Node::File { digest, size, executable: f.is_executable });
        }
        for l in &dir.symlinks {
            t.add(&join(&l.name)?, Node::Symlink { target: l.target.clone() });
        }
        for sub in &dir.directories {
            let dg = sub.digest.clone().ok_or_else(|| bad("has a directory without digest".into()))?;
            todo.push((join(&sub.name)?, dg, depth + 1));
        }
        if t.nodes.len() > MAX_TREE_ENTRIES {
            return Err(bad(format!("has more than {MAX_TREE_ENTRIES} entries")));
        }
    }
    Ok(t)
}

impl Tree {
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Node)> {
        self.nodes.iter()
    }

    pub fn get(&self, path: &str) -> Option<&Node> {
        self.nodes.get(path)
    }
}

/// What to upload before an `Execute`: files of the local CAS (by path) and messages.
#[derive(Default)]
pub struct Uploads {
    pub files: BTreeMap<Digest, (u64, PathBuf)>,
    pub messages: Vec<Vec<u8>>,
}

impl Uploads {
    /// Uploads what the server lacks (one FindMissingBlobs, then each missing blob). Returns the
    /// number of blobs and bytes sent.
    pub fn send(&self, grpc: &Grpc) -> Result<(usize, u64)> {
        let mut all: Vec<(Digest, u64)> = self.files.iter().map(|(d, (n, _))| (d.clone(), *n)).collect();
        let msgs: BTreeMap<Digest, &Vec<u8>> = self.messages.iter().map(|m| (Digest::of_bytes(m), m)).collect();
        all.extend(msgs.iter().map(|(d, m)| (d.clone(), m.len() as u64)));
        let mut missing = Vec::new();
        for chunk in all.chunks(10_000) {
            missing.extend(grpc.find_missing(chunk)?);
        }
        let (mut n, mut bytes) = (0, 0);
        for d in missing {
            if let Some(m) = msgs.get(&d) {
                grpc.write_blob(&d, m.len() as u64, Box::new(std::io::Cursor::new((*m).clone())))?;
                bytes += m.len() as u64;
            } else if let Some((size, path)) = self.files.get(&d) {
                let f = std::fs::File::open(path).map_err(|source| RemoteError::Read {
                    method: "ByteStream.Write",
                    url: path.display().to_string(),
                    source,
                })?;
                grpc.write_blob(&d, *size, Box::new(std::io::BufReader::new(f)))?;
                bytes += size;
            } else {
                continue;
            }
            n += 1;
        }
        Ok((n, bytes))
    }
}

/// The `Execute` of `action` (already in the CAS), waited for until done or `timeout`; resumed
/// with `WaitExecution` when the stream ends early. Dropping the returned future before it is
/// done (the build was interrupted, or failed elsewhere) cancels the operation on the server.
pub async fn execute(grpc: Arc<Grpc>, action: re::Digest, timeout: Duration) -> Result<re::ExecuteResponse> {
    let name: Arc<Mutex<Option<String>>> = Arc::default();
    let mut guard = CancelOnDrop { grpc: grpc.clone(), name: name.clone(), armed: true };
    // Connected already (the inputs were uploaded); never connect on the gRPC runtime's own
    // thread, whose blocking calls wait for that thread.
    let channel = grpc.channel()?;
    let g2 = grpc.clone();
    let task = Grpc::spawn(async move { run_execute(&g2, channel, action, timeout, &name).await });
    let r = match task.await {
        Ok(r) => r,
        Err(e) => Err(RemoteError::Client { reason: format!("the Execute task failed: {e}") }),
    };
    guard.armed = false;
    r
}

async fn run_execute(
    grpc: &Grpc,
    channel: tonic::transport::Channel,
    action: re::Digest,
    timeout: Duration,
    name: &Mutex<Option<String>>,
) -> Result<re::ExecuteResponse> {
    use re::execution_client::ExecutionClient;
    let deadline = tokio::time::Instant::now() + timeout;
    let req = re::ExecuteRequest {
        instance_name: grpc.instance().to_string(),
        action_digest: Some(action),
        digest_function: re::digest_function::Value::Sha256 as i32,
        ..Default::default()
    };
    let mut c = ExecutionClient::new(channel).max_decoding_message_size(16 << 20);
    let mut stream =
        c.execute(grpc.with_headers(req, timeout)).await.map_err(|s| grpc.error("Execute", s))?.into_inner();
    let mut resumes = 0;
    loop {
        let next = tokio::time::timeout_at(deadline, stream.message()).await.map_err(|_| RemoteError::Grpc {
            method: "Execute",
            url: grpc.url().to_string(),
            code: tonic::Code::DeadlineExceeded,
            message: format!("the action did not finish within {timeout:?}"),
            unreachable: false,
        })?;
        match next {
            Ok(Some(op)) => {
                if !op.name.is_empty() {
                    *name.lock().unwrap_or_else(|p| p.into_inner()) = Some(op.name.clone());
                }
                if !op.done {
                    continue;
                }
                return match op.result {
                    Some(lr::operation::Result::Response(any)) => re::ExecuteResponse::decode(any.value.as_slice())
                        .map_err(|e| RemoteError::Client { reason: format!("Execute answered garbage: {e}") }),
                    Some(lr::operation::Result::Error(s)) => Err(RemoteError::Grpc {
                        method: "Execute",
                        url: grpc.url().to_string(),
                        code: tonic::Code::from(s.code),
                        message: s.message,
                        unreachable: false,
                    }),
                    None => {
                        Err(RemoteError::Client { reason: "Execute ended with neither a result nor an error".into() })
                    }
                };
            }
            // The stream ended or broke before the operation was done: resume it by name.
            Ok(None) if resumes < 5 => resumes += 1,
            Err(s) if resumes < 5 && transient(s.code()) => resumes += 1,
            Ok(None) => {
                return Err(RemoteError::Client { reason: "the Execute stream ended early, five times".into() })
            }
            Err(s) => return Err(grpc.error("Execute", s)),
        }
        {
            let Some(n) = name.lock().unwrap_or_else(|p| p.into_inner()).clone() else {
                return Err(RemoteError::Client { reason: "Execute ended before naming its operation".into() });
            };
            tokio::time::sleep(Duration::from_millis(200 * resumes)).await;
            let req = re::WaitExecutionRequest { name: n };
            stream = c
                .wait_execution(grpc.with_headers(req, deadline.saturating_duration_since(tokio::time::Instant::now())))
                .await
                .map_err(|s| grpc.error("WaitExecution", s))?
                .into_inner();
        }
    }
}

/// A status a dropped connection or a restarting server gives (worth a `WaitExecution`).
fn transient(code: tonic::Code) -> bool {
    matches!(code, tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Internal | tonic::Code::Cancelled)
}

/// Cancels the operation on the server if the `Execute` it guards is dropped before done.
struct CancelOnDrop {
    grpc: Arc<Grpc>,
    name: Arc<Mutex<Option<String>>>,
    armed: bool,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let Some(name) = self.name.lock().unwrap_or_else(|p| p.into_inner()).clone() else { return };
        // Blocking, briefly: the process may exit right after an interrupted build.
        let _: Result<bazel_remote_apis::google::protobuf::Empty> = self.grpc.unary(
            "CancelOperation",
            "/google.longrunning.Operations/CancelOperation",
            lr::CancelOperationRequest { name },
            Duration::from_secs(2),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trees_encode_canonically_and_nest() {
        let d = Digest::of_bytes(b"x");
        let mut t = Tree::default();
        t.add("src/b.txt", Node::File { digest: d.clone(), size: 1, executable: false });
        t.add("src/a/run", Node::File { digest: d.clone(), size: 1, executable: true });
        t.add("order.json", Node::File { digest: d.clone(), size: 1, executable: false });
        t.add("src/link", Node::Symlink { target: "b.txt".into() });
        let (root, msgs) = t.encode();
        // Leaves first, the root last; the same tree added in another order encodes the same.
        assert_eq!(msgs.len(), 3);
        assert_eq!(root.hash, Digest::of_bytes(msgs.last().unwrap()).hex());
        let mut t2 = Tree::default();
        for (p, n) in t.iter().collect::<Vec<_>>().into_iter().rev() {
            t2.add(p, n.clone());
        }
        assert_eq!(t2.encode().0, root);
        let top = re::Directory::decode(msgs.last().unwrap().as_slice()).unwrap();
        assert_eq!(top.files.iter().map(|f| f.name.as_str()).collect::<Vec<_>>(), ["order.json"]);
        assert_eq!(top.directories[0].name, "src");
    }
}
