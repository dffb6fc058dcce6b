//! Command line of the load generator.

use std::time::Duration;

pub(crate) const USAGE: &str = "\
loadgen: end-to-end load against the chat example (loopback only)

  --url URL            ws://127.0.0.1:9001 (host must be loopback)
  --subscribers N      receiving connections (default 1000)
  --publishers P       sending connections (default 1)
  --rooms R            rooms; subscribers and publishers are spread round-robin
                       (default 1; in --idle mode ceil(N/100))
  --size B             message text size in bytes (default 64, minimum 40)
  --rate R             fixed rate, messages/s per publisher (default: saturate)
  --window W           saturating: messages in flight per publisher (default 32)
  --duration S         seconds of publishing (default 10)
  --count M            stop each publisher after M messages (default: no limit)
  --drain-timeout S    after publishing, wait this long for stragglers (default 5)
  --server-pid PID     report the server's CPU time per delivered message and RSS
  --idle               hold N joined connections, report server RSS per connection
  --hold S             idle mode: seconds to hold the connections (default 2)
  --connect-parallel K concurrent connection attempts (default 128)
  --non-readers K      also K members that never read (4 KiB receive window), spread
                       over the rooms; at the end they read, and the close codes they
                       got are reported (a slow consumer is closed with 1008)
  --timeline MS        per MS milliseconds of send time: deliveries, how many took over
                       2 ms, and the largest latency (where in the run the tail comes from)
  --churn N            N connect/join/disconnect cycles (after 1,000 of warm-up);
                       reports the server's RSS before and after
";

#[derive(Clone, Debug)]
pub(crate) struct Args {
    pub(crate) url: String,
    pub(crate) host_port: String,
    pub(crate) subscribers: usize,
    pub(crate) publishers: usize,
    pub(crate) rooms: Option<usize>,
    pub(crate) size: usize,
    pub(crate) rate: Option<f64>,
    pub(crate) window: u64,
    pub(crate) duration: Duration,
    pub(crate) count: Option<u64>,
    pub(crate) drain_timeout: Duration,
    pub(crate) server_pid: Option<u32>,
    pub(crate) idle: bool,
    pub(crate) hold: Duration,
    pub(crate) connect_parallel: usize,
    pub(crate) non_readers: usize,
    /// Print deliveries, those over 2 ms and the largest latency per this many ns of send
    /// time.
    pub(crate) timeline: Option<u64>,
    pub(crate) churn: Option<u64>,
}

pub(crate) fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        url: "ws://127.0.0.1:9001".to_string(),
        host_port: String::new(),
        subscribers: 1000,
        publishers: 1,
        rooms: None,
        size: 64,
        rate: None,
        window: 32,
        duration: Duration::from_secs(10),
        count: None,
        drain_timeout: Duration::from_secs(5),
        server_pid: None,
        idle: false,
        hold: Duration::from_secs(2),
        connect_parallel: 128,
        non_readers: 0,
        timeline: None,
        churn: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        fn num<T: std::str::FromStr>(name: &str, v: String) -> Result<T, String> {
            v.parse().map_err(|_| format!("{name}: cannot parse {v:?}"))
        }
        match flag.as_str() {
            "--url" => a.url = value("--url")?,
            "--subscribers" => a.subscribers = num("--subscribers", value("--subscribers")?)?,
            "--publishers" => a.publishers = num("--publishers", value("--publishers")?)?,
            "--rooms" => a.rooms = Some(num::<usize>("--rooms", value("--rooms")?)?.max(1)),
            "--size" => a.size = num("--size", value("--size")?)?,
            "--rate" => a.rate = Some(num("--rate", value("--rate")?)?),
            "--window" => a.window = num::<u64>("--window", value("--window")?)?.max(1),
            "--duration" => {
                a.duration = Duration::from_secs_f64(num("--duration", value("--duration")?)?)
            }
            "--count" => a.count = Some(num("--count", value("--count")?)?),
            "--drain-timeout" => {
                a.drain_timeout =
                    Duration::from_secs_f64(num("--drain-timeout", value("--drain-timeout")?)?)
            }
            "--server-pid" => a.server_pid = Some(num("--server-pid", value("--server-pid")?)?),
            "--idle" => a.idle = true,
            "--hold" => a.hold = Duration::from_secs_f64(num("--hold", value("--hold")?)?),
            "--connect-parallel" => {
                a.connect_parallel =
                    num::<usize>("--connect-parallel", value("--connect-parallel")?)?.max(1)
            }
            "--timeline" => {
                a.timeline =
                    Some(num::<u64>("--timeline", value("--timeline")?)?.max(1) * 1_000_000)
            }
            "--non-readers" => a.non_readers = num("--non-readers", value("--non-readers")?)?,
            "--churn" => a.churn = Some(num("--churn", value("--churn")?)?),
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    a.size = a.size.max(40);
    if a.idle || a.churn.is_some() {
        a.publishers = 0;
    } else if a.publishers == 0 {
        return Err("--publishers must be at least 1 (or use --idle)".to_string());
    }
    a.host_port = loopback_host_port(&a.url)?;
    Ok(a)
}

/// `host:port` of a `ws://` URL whose host is a loopback address; anything else is refused.
pub(crate) fn loopback_host_port(url: &str) -> Result<String, String> {
    let rest = url
        .strip_prefix("ws://")
        .ok_or_else(|| format!("{url}: only ws:// URLs are supported"))?;
    let authority = rest.split('/').next().unwrap_or_default();
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => (h, p),
        _ => (authority, "80"),
    };
    let port: u16 = port.parse().map_err(|_| format!("{url}: bad port"))?;
    let loopback = host == "localhost"
        || host == "[::1]"
        || host
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback());
    if !loopback {
        return Err(format!(
            "{url}: refusing a non-loopback host; the load generator only targets this machine"
        ));
    }
    let host = if host == "localhost" {
        "127.0.0.1"
    } else {
        host
    };
    Ok(format!("{host}:{port}"))
}

pub(crate) fn rooms_for(args: &Args) -> usize {
    args.rooms.unwrap_or(if args.idle {
        args.subscribers.div_ceil(100).max(1)
    } else {
        1
    })
}
