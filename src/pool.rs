//! Connections kept open across the playbooks of one `kfix run A B …`: each host is
//! connected to, and its facts gathered, once for the whole command; a host's lock, once
//! taken, is held until the command ends.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::host::Facts;
use crate::transport::{Conn, HostLock};

/// Open connections by inventory host name, with the facts gathered over them.
#[derive(Default)]
pub struct Pool {
    conns: Mutex<HashMap<String, (Arc<Conn>, Facts)>>,
    /// Host locks held between one playbook's apply and the next, with the connection
    /// whose session holds each.
    locks: Mutex<HashMap<String, (Arc<Conn>, HostLock)>>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.conns.lock().map_or(0, |m| m.len());
        write!(f, "Pool({n} open)")
    }
}

impl Pool {
    /// The host's open connection, if it is still usable (an idle SSH master exits by
    /// itself after a few seconds: the caller then connects again).
    pub async fn get(&self, name: &str) -> Option<(Arc<Conn>, Facts)> {
        let hit = self.conns.lock().ok()?.get(name).cloned();
        let (conn, facts) = hit?;
        if conn.alive().await {
            return Some((conn, facts));
        }
        let gone = self.conns.lock().ok()?.remove(name);
        if let Some((c, _)) = gone {
            Conn::close_shared(c).await;
        }
        None
    }

    /// Keep a new connection for the next playbooks (replacing a dead one).
    pub async fn put(&self, name: &str, conn: &Arc<Conn>, facts: &Facts) {
        let old = match self.conns.lock() {
            Ok(mut m) => m.insert(name.to_string(), (conn.clone(), facts.clone())),
            Err(_) => None,
        };
        if let Some((c, _)) = old {
            Conn::close_shared(c).await;
        }
    }

    /// The host's lock kept by an earlier playbook, if it is held over `conn` (the
    /// connection the caller applies over); one held over another (dead) connection is
    /// let go, and the caller takes the lock again.
    pub async fn take_lock(&self, name: &str, conn: &Arc<Conn>) -> Option<HostLock> {
        let (held_over, lock) = self.locks.lock().ok()?.remove(name)?;
        if Arc::ptr_eq(&held_over, conn) {
            return Some(lock);
        }
        lock.release().await;
        None
    }

    /// Keep the host's lock for the next playbooks (released by [`Pool::close`]).
    pub async fn keep_lock(&self, name: &str, conn: &Arc<Conn>, lock: HostLock) {
        let rejected = match self.locks.lock() {
            Ok(mut m) => m
                .insert(name.to_string(), (conn.clone(), lock))
                .map(|(_, old)| old),
            Err(_) => Some(lock),
        };
        if let Some(l) = rejected {
            l.release().await;
        }
    }

    /// Release every kept lock, then close every connection no playbook holds any more
    /// (all of them at the end).
    pub async fn close(&self) {
        let locks: Vec<HostLock> = match self.locks.lock() {
            Ok(mut m) => m.drain().map(|(_, (_, l))| l).collect(),
            Err(_) => Vec::new(),
        };
        let mut set = tokio::task::JoinSet::new();
        for l in locks {
            set.spawn(l.release());
        }
        while set.join_next().await.is_some() {}
        let all: Vec<Arc<Conn>> = match self.conns.lock() {
            Ok(mut m) => m.drain().map(|(_, (c, _))| c).collect(),
            Err(_) => Vec::new(),
        };
        close_all(all).await;
    }
}

async fn close_all(all: Vec<Arc<Conn>>) {
    let mut set = tokio::task::JoinSet::new();
    for c in all {
        set.spawn(Conn::close_shared(c));
    }
    while set.join_next().await.is_some() {}
}
