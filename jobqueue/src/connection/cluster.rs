//! What only a Redis Cluster needs: routing a command to one node, the
//! primaries from `CLUSTER NODES`, and pub/sub on some node of the cluster.

use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{Client, ConnectionInfo, FromRedisValue, Value};

use super::{Backend, Conn, Connection};
use crate::error::Result;

impl Connection {
    /// Sends `cmd` to the cluster node `routing` names, retrying connection
    /// errors.
    pub(super) async fn route(&self, cmd: &redis::Cmd, routing: &RoutingInfo) -> Result<Value> {
        self.run(|c| async move {
            match c {
                Conn::Cluster(mut c) => c.route_command(cmd.clone(), routing.clone()).await,
                mut other => cmd.query_async(&mut other).await,
            }
        })
        .await
    }

    /// Every primary that serves slots, from `CLUSTER NODES`.
    pub(super) async fn primaries(&self) -> Result<Vec<Primary>> {
        let cmd = redis::cmd("CLUSTER").arg("NODES").clone();
        let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random);
        let nodes = String::from_redis_value(self.route(&cmd, &routing).await?)
            .map_err(redis::RedisError::from)?;
        Ok(parse_primaries(&nodes))
    }

    /// A new pub/sub connection (pub/sub needs a connection of its own).
    ///
    /// On a cluster, `PUBLISH` reaches every node, so subscribing on any one
    /// node hears every queue's events. Subscribers start at a random primary
    /// (so a fleet's waiters spread over the nodes) and try the others, then
    /// the seed nodes; each address keeps the seed's TLS settings.
    pub(crate) async fn pubsub(&self) -> Result<redis::aio::PubSub> {
        match &self.inner.backend {
            Backend::Single { client, .. } => Ok(client.get_async_pubsub().await?),
            #[cfg(feature = "testing")]
            Backend::Detached => Err(crate::error::Error::malformed(
                "connection",
                super::DETACHED,
            )),
            Backend::Cluster { seeds, .. } => {
                let mut primaries = self.primaries().await.unwrap_or_default();
                if !primaries.is_empty() {
                    let start = rand::random::<u32>() as usize % primaries.len();
                    primaries.rotate_left(start);
                }
                let mut candidates: Vec<ConnectionInfo> = primaries
                    .into_iter()
                    .map(|p| at_address(&seeds[0], p.host, p.port))
                    .collect();
                candidates.extend(seeds.iter().cloned());
                let mut last = None;
                for info in candidates {
                    match Client::open(info)?.get_async_pubsub().await {
                        Ok(pubsub) => return Ok(pubsub),
                        Err(e) => last = Some(e),
                    }
                }
                Err(last.expect("at least one seed").into())
            }
        }
    }
}

/// A primary of a cluster, and one slot it serves (to route commands to it
/// through the client's slot map).
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Primary {
    pub(super) host: String,
    pub(super) port: u16,
    pub(super) slot: u16,
}

/// Primaries serving slots, from a `CLUSTER NODES` reply: lines of
/// `id host:port@cport[,hostname] flags master-id ping pong epoch link slot…`.
/// A primary flagged `fail` (agreed dead) is left out; one only suspected
/// (`fail?`) is kept.
fn parse_primaries(nodes: &str) -> Vec<Primary> {
    nodes
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let flags: Vec<&str> = fields.get(2)?.split(',').collect();
            if !flags.contains(&"master") || flags.contains(&"fail") {
                return None;
            }
            // Slot fields are `N` or `N-M`; `[N->-id]` marks a migration.
            let slot = fields
                .get(8..)?
                .iter()
                .find(|f| !f.starts_with('['))
                .and_then(|f| f.split('-').next()?.parse().ok())?;
            let addr = fields.get(1)?.split(['@', ',']).next()?;
            let (host, port) = addr.rsplit_once(':')?;
            Some(Primary {
                host: host.to_owned(),
                port: port.parse().ok()?,
                slot,
            })
        })
        .collect()
}

/// `seed` with its address moved to `host:port`, keeping TLS and its settings.
fn at_address(seed: &ConnectionInfo, host: String, port: u16) -> ConnectionInfo {
    let addr = match seed.addr() {
        redis::ConnectionAddr::TcpTls {
            insecure,
            tls_params,
            ..
        } => redis::ConnectionAddr::TcpTls {
            host,
            port,
            insecure: *insecure,
            tls_params: tls_params.clone(),
        },
        _ => redis::ConnectionAddr::Tcp(host, port),
    };
    seed.clone().set_addr(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn primaries_are_the_slot_serving_masters_of_cluster_nodes() {
        let nodes = "\
a1 127.0.0.1:7001@17001 myself,master - 0 0 1 connected 0-5460
b2 127.0.0.1:7002@17002,host-b master,fail? - 0 1 2 connected [5461->-a1] 5461-10922
c3 127.0.0.1:7003@17003 master,fail - 0 1 3 disconnected 10923-16383
d4 127.0.0.1:7004@17004 slave a1 0 1 1 connected
e5 127.0.0.1:7005@17005 master - 0 1 5 connected
";
        let primary = |port, slot| Primary {
            host: "127.0.0.1".to_owned(),
            port,
            slot,
        };
        assert_eq!(
            parse_primaries(nodes),
            vec![primary(7001, 0), primary(7002, 5461)]
        );
    }
}
