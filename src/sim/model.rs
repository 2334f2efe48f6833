//! ZooKeeper's data tree as its clients see it: nodes with per-parent
//! sequence counters, persistent and ephemeral nodes owned by sessions,
//! growing czxids, one-shot watches, and the errors the core relies on.
//! Sessions' liveness (expiry, connections) lives in the world, not here.

use std::collections::{BTreeMap, BTreeSet};

use crate::core::{Answer, Failure, Mode, Op, Stat, WatchKind};

#[derive(Debug, Clone)]
pub(super) struct Node {
    pub(super) data: Vec<u8>,
    /// The session that owns it; 0 for a persistent node.
    pub(super) owner: i64,
    pub(super) czxid: i64,
    /// The next sequence number for a sequential child: the number of
    /// children created so far (sequential or not; deletions do not count).
    next_sequence: i32,
}

/// A watch that fired: the session to tell, on which path, what happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Fired {
    pub(super) session: i64,
    pub(super) path: String,
    pub(super) kind: WatchKind,
}

#[derive(Debug, Clone)]
pub(super) struct Tree {
    nodes: BTreeMap<String, Node>,
    zxid: i64,
    /// One-shot child watches, per path.
    child_watches: BTreeMap<String, BTreeSet<i64>>,
    /// One-shot exists watches (creation, change, deletion), per path.
    exists_watches: BTreeMap<String, BTreeSet<i64>>,
}

/// The parent of an absolute path (`/` for a top-level node).
fn parent(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &path[..i],
    }
}

fn stat(node: &Node) -> Stat {
    Stat {
        owner: node.owner,
        czxid: node.czxid,
        ctime: 0,
    }
}

impl Tree {
    pub(super) fn new() -> Tree {
        let mut nodes = BTreeMap::new();
        let root = Node {
            data: Vec::new(),
            owner: 0,
            czxid: 0,
            next_sequence: 0,
        };
        nodes.insert("/".to_owned(), root);
        Tree {
            nodes,
            zxid: 0,
            child_watches: BTreeMap::new(),
            exists_watches: BTreeMap::new(),
        }
    }

    /// Applies `op` for `session` at the leader; watches that fire are
    /// appended to `fired`.
    pub(super) fn apply(
        &mut self,
        session: i64,
        op: &Op,
        fired: &mut Vec<Fired>,
    ) -> Result<Answer, Failure> {
        match op {
            Op::Create { path, data, mode } => {
                let full = self.create(session, path, data, *mode, fired)?;
                let created = self.nodes.get(&full).map(stat);
                Ok(Answer::Created(full, created.expect("just created")))
            }
            Op::Delete { path } => self.delete(path, fired).map(|()| Answer::Done),
            // Every server of the model is the leader, or as current as it.
            Op::Sync { .. } => Ok(Answer::Done),
            Op::Exists { path, watch: true } => {
                self.exists_watches
                    .entry(path.clone())
                    .or_default()
                    .insert(session);
                self.read(op)
            }
            Op::Children { path, watch: true } if self.nodes.contains_key(path) => {
                self.child_watches
                    .entry(path.clone())
                    .or_default()
                    .insert(session);
                self.read(op)
            }
            _ => self.read(op),
        }
    }

    /// Answers a read without setting watches (as a stale follower does);
    /// a write gets `None`: it never completes.
    pub(super) fn read(&self, op: &Op) -> Result<Answer, Failure> {
        match op {
            Op::Exists { path, .. } => Ok(Answer::Stat(self.nodes.get(path).map(stat))),
            Op::Children { path, .. } => match self.nodes.get(path) {
                Some(node) => Ok(Answer::Children(self.children(path), node.czxid)),
                None => Err(Failure::NoNode),
            },
            Op::Data { path } => match self.nodes.get(path) {
                Some(node) => Ok(Answer::Data(node.data.clone(), stat(node))),
                None => Err(Failure::NoNode),
            },
            Op::Create { .. } | Op::Delete { .. } | Op::Sync { .. } => {
                Err(Failure::Refused("a write on a read-only view".into()))
            }
        }
    }

    pub(super) fn is_read(op: &Op) -> bool {
        matches!(
            op,
            Op::Exists { .. } | Op::Children { .. } | Op::Data { .. }
        )
    }

    /// The names of the children of `path`.
    pub(super) fn children(&self, path: &str) -> Vec<String> {
        let prefix = if path == "/" {
            "/".to_owned()
        } else {
            format!("{path}/")
        };
        self.nodes
            .range(prefix.clone()..)
            .take_while(|(p, _)| p.starts_with(&prefix))
            .filter(|(p, _)| !p[prefix.len()..].contains('/') && p.len() > prefix.len())
            .map(|(p, _)| p[prefix.len()..].to_owned())
            .collect()
    }

    fn create(
        &mut self,
        session: i64,
        path: &str,
        data: &[u8],
        mode: Mode,
        fired: &mut Vec<Fired>,
    ) -> Result<String, Failure> {
        let parent_path = parent(path).to_owned();
        let Some(parent_node) = self.nodes.get_mut(&parent_path) else {
            return Err(Failure::NoNode);
        };
        if parent_node.owner != 0 {
            return Err(Failure::Refused("ephemerals cannot have children".into()));
        }
        // The parent's counter of created children (ZooKeeper's cversion
        // without the deletions): every child counts, sequential or not.
        let sequence = parent_node.next_sequence;
        let full = if mode == Mode::EphemeralSequential {
            format!("{path}{sequence:010}")
        } else {
            path.to_owned()
        };
        if self.nodes.contains_key(&full) {
            return Err(Failure::NodeExists);
        }
        let parent_node = self.nodes.get_mut(&parent_path).expect("checked");
        parent_node.next_sequence = sequence.wrapping_add(1);
        self.zxid += 1;
        let owner = if mode == Mode::Persistent { 0 } else { session };
        let node = Node {
            data: data.to_vec(),
            owner,
            czxid: self.zxid,
            next_sequence: 0,
        };
        self.nodes.insert(full.clone(), node);
        self.fire_exists(&full, WatchKind::Changed, fired);
        self.fire_children(&parent_path, WatchKind::Changed, fired);
        Ok(full)
    }

    fn delete(&mut self, path: &str, fired: &mut Vec<Fired>) -> Result<(), Failure> {
        if !self.nodes.contains_key(path) || path == "/" {
            return Err(Failure::NoNode);
        }
        if !self.children(path).is_empty() {
            return Err(Failure::Refused("not empty".into()));
        }
        self.zxid += 1;
        self.nodes.remove(path);
        self.fire_exists(path, WatchKind::Deleted, fired);
        self.fire_children(path, WatchKind::Deleted, fired);
        self.fire_children(parent(path), WatchKind::Changed, fired);
        Ok(())
    }

    /// Deletes `path` and everything below it, as `deleteall` does.
    pub(super) fn delete_all(&mut self, path: &str, fired: &mut Vec<Fired>) {
        for child in self.children(path) {
            self.delete_all(&format!("{path}/{child}"), fired);
        }
        let _ = self.delete(path, fired);
    }

    /// The session ended (closed or expired): its ephemeral nodes go, and so
    /// do its watches.
    pub(super) fn end_session(&mut self, session: i64, fired: &mut Vec<Fired>) {
        let owned: Vec<String> = self
            .nodes
            .iter()
            .filter(|(_, n)| n.owner == session)
            .map(|(p, _)| p.clone())
            .collect();
        for path in owned {
            let _ = self.delete(&path, fired);
        }
        for watches in [&mut self.child_watches, &mut self.exists_watches] {
            for sessions in watches.values_mut() {
                sessions.remove(&session);
            }
        }
        fired.retain(|f| f.session != session);
    }

    /// Every ephemeral node, with its owner.
    pub(super) fn ephemerals(&self) -> Vec<(String, i64)> {
        self.nodes
            .iter()
            .filter(|(_, n)| n.owner != 0)
            .map(|(p, n)| (p.clone(), n.owner))
            .collect()
    }

    fn fire_exists(&mut self, path: &str, kind: WatchKind, fired: &mut Vec<Fired>) {
        fire(&mut self.exists_watches, path, kind, fired);
    }

    fn fire_children(&mut self, path: &str, kind: WatchKind, fired: &mut Vec<Fired>) {
        fire(&mut self.child_watches, path, kind, fired);
    }
}

fn fire(
    watches: &mut BTreeMap<String, BTreeSet<i64>>,
    path: &str,
    kind: WatchKind,
    fired: &mut Vec<Fired>,
) {
    for session in watches.remove(path).unwrap_or_default() {
        fired.push(Fired {
            session,
            path: path.to_owned(),
            kind,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The path of the node created, or why not.
    fn create(tree: &mut Tree, session: i64, path: &str, mode: Mode) -> Result<String, Failure> {
        let op = Op::Create {
            path: path.into(),
            data: Vec::new(),
            mode,
        };
        match tree.apply(session, &op, &mut Vec::new())? {
            Answer::Created(path, _) => Ok(path),
            other => panic!("a create answered {other:?}"),
        }
    }

    #[test]
    fn sequences_count_per_parent_and_ephemerals_go_with_their_session() {
        let mut tree = Tree::new();
        assert_eq!(
            create(&mut tree, 7, "/g/m", Mode::EphemeralSequential),
            Err(Failure::NoNode)
        );
        create(&mut tree, 7, "/g", Mode::Persistent).unwrap();
        assert_eq!(
            create(&mut tree, 7, "/g", Mode::Persistent),
            Err(Failure::NodeExists)
        );
        let a = create(&mut tree, 7, "/g/m", Mode::EphemeralSequential).unwrap();
        let b = create(&mut tree, 8, "/g/m", Mode::EphemeralSequential).unwrap();
        assert_eq!(a, "/g/m0000000000");
        assert_eq!(b, "/g/m0000000001");
        let mut fired = Vec::new();
        let watch = Op::Exists {
            path: "/g/m0000000000".into(),
            watch: true,
        };
        tree.apply(8, &watch, &mut fired).unwrap();
        tree.end_session(7, &mut fired);
        assert_eq!(tree.children("/g"), ["m0000000001"]);
        assert_eq!(
            fired,
            [Fired {
                session: 8,
                path: "/g/m0000000000".into(),
                kind: WatchKind::Deleted
            }]
        );
    }

    /// As tests/model_rules.rs checks against a real server: every child
    /// created counts, a deletion does not, and a new parent starts at 0.
    #[test]
    fn the_sequence_counts_every_child_created_under_the_parent() {
        let mut tree = Tree::new();
        create(&mut tree, 7, "/g", Mode::Persistent).unwrap();
        let seq = |tree: &mut Tree| create(tree, 7, "/g/m", Mode::EphemeralSequential).unwrap();
        assert_eq!(seq(&mut tree), "/g/m0000000000");
        create(&mut tree, 7, "/g/plain", Mode::Persistent).unwrap();
        assert_eq!(seq(&mut tree), "/g/m0000000002");
        tree.delete("/g/plain", &mut Vec::new()).unwrap();
        assert_eq!(seq(&mut tree), "/g/m0000000003");
        tree.delete_all("/g", &mut Vec::new());
        create(&mut tree, 7, "/g", Mode::Persistent).unwrap();
        assert_eq!(seq(&mut tree), "/g/m0000000000");
    }
}
