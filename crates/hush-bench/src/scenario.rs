//! The scenarios. Every one sets up accounts over the real protocol, measures the
//! server while the load runs, and checks that nothing was lost or duplicated.
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::StreamExt;
use hush_client::connection::Connection;
use hush_client::home::Home;
use hush_client::hush_proto::fingerprint::Fingerprint;
use hush_client::hush_proto::ids::{DeviceId, Username};
use hush_client::hush_proto::pb::{self, client_frame::Body};
use hush_client::hush_proto::response::{EntryKind, Response};
use hush_client::trust::{FirstUse, KnownServers};
use hush_client::{Client, ClientOptions, Enrolment};
use rand::RngCore;
use tokio::sync::Mutex;

use crate::measure::{self, Phase, Report};
use crate::server;
use crate::{Common, Delivery};

const PASSWORD: &[u8] = b"benchmark password, long enough";
/// Bytes before the padding: sender index, sequence number, send time (µs).
const HEADER: usize = 4 + 8 + 8;

/// One benchmark account: its home and device.
struct Account {
    dir: tempfile::TempDir,
    name: Username,
    device: DeviceId,
    /// The node it registered on and connects to.
    addr: String,
}

async fn register(server: &server::Server, i: usize) -> anyhow::Result<Account> {
    let dir = tempfile::tempdir()?;
    let name = Username::parse(&format!("bench{i:05}"))?;
    let fp = Fingerprint::parse(&server.fingerprint)?;
    let addr = server.addr(i).to_owned();
    let (client, _) = Client::enrol(
        dir.path(),
        &addr,
        FirstUse::Expect(fp),
        Enrolment::Register {
            username: name.clone(),
            password: zeroize::Zeroizing::new(PASSWORD.to_vec()),
            invite: None,
            profile: Default::default(),
        },
        ClientOptions::default(),
    )
    .await
    .with_context(|| format!("registering {name}"))?;
    let device = client.stored_account().await?.device_id;
    client.close().await;
    Ok(Account {
        dir,
        name,
        device,
        addr,
    })
}

/// An authenticated raw connection for `account`, to its node.
async fn connect(server: &server::Server, account: &Account) -> anyhow::Result<Connection> {
    let dir = account.dir.path();
    let token = Home::open(dir)?.account()?.context("no account")?.token;
    let fp = Fingerprint::parse(&server.fingerprint)?;
    let conn = Connection::connect(
        &account.addr,
        &KnownServers::new(dir),
        &FirstUse::Expect(fp),
    )
    .await?;
    match conn
        .request(Body::Authenticate(pb::Authenticate {
            session_token: token.expose().to_vec().into(),
        }))
        .await?
    {
        Response::Authenticated(_) => Ok(conn),
        other => bail!("unexpected answer to Authenticate: {}", other.kind()),
    }
}

/// What one receiving client saw.
#[derive(Default)]
struct Received {
    count: u64,
    duplicated: u64,
    latencies_us: Vec<u64>,
}

/// How a receiver takes its entries and acknowledges them.
#[derive(Clone, Copy)]
struct ReceiveMode {
    delivery: Delivery,
    ack_batch: usize,
}

impl ReceiveMode {
    fn of(c: &Common) -> Self {
        ReceiveMode {
            delivery: c.delivery,
            ack_batch: c.ack_batch.max(1),
        }
    }
}

/// Acknowledges this receiver's entries in batches, several batches in flight.
struct Acker {
    conn: Arc<Connection>,
    pending: Vec<u64>,
    in_flight: futures::stream::FuturesUnordered<
        std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<()>> + Send>>,
    >,
}

impl Acker {
    fn new(conn: Arc<Connection>) -> Self {
        Acker {
            conn,
            pending: Vec::new(),
            in_flight: Default::default(),
        }
    }

    fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let ids = std::mem::take(&mut self.pending);
        let conn = Arc::clone(&self.conn);
        self.in_flight.push(Box::pin(async move {
            match conn
                .request(Body::Ack(pb::Ack {
                    ids,
                    missed_seen: 0,
                }))
                .await?
            {
                Response::Acked => Ok(()),
                other => bail!("unexpected answer to Ack: {}", other.kind()),
            }
        }));
    }

    /// Waits for every ack sent so far.
    async fn settle(&mut self) -> anyhow::Result<()> {
        self.flush();
        while let Some(r) = self.in_flight.next().await {
            r?;
        }
        Ok(())
    }
}

/// Counts one page of entries (each message once) and queues their acks.
async fn note(
    entries: &[hush_client::hush_proto::response::Entry],
    start: Instant,
    seen: &mut HashSet<(u32, u64)>,
    out: &Mutex<Received>,
    acker: &mut Acker,
) {
    let now_us = start.elapsed().as_micros() as u64;
    let mut r = out.lock().await;
    for e in entries {
        acker.pending.push(e.id);
        if e.kind != EntryKind::Application || e.payload.len() < HEADER {
            continue;
        }
        let p = &e.payload;
        let sender = u32::from_be_bytes(p[0..4].try_into().unwrap_or_default());
        let seq = u64::from_be_bytes(p[4..12].try_into().unwrap_or_default());
        let sent_us = u64::from_be_bytes(p[12..20].try_into().unwrap_or_default());
        if seen.insert((sender, seq)) {
            r.count += 1;
            r.latencies_us.push(now_us.saturating_sub(sent_us));
        } else {
            r.duplicated += 1;
        }
    }
}

/// Receives and acknowledges until `stop`, checking each message once: entries
/// pushed to a following connection (P443), or fetched after each wake-up (P442).
async fn receive(
    conn: Arc<Connection>,
    mode: ReceiveMode,
    start: Instant,
    stop: Arc<AtomicBool>,
    out: Arc<Mutex<Received>>,
) -> anyhow::Result<()> {
    let mut seen: HashSet<(u32, u64)> = HashSet::new();
    let mut acker = Acker::new(Arc::clone(&conn));
    let follow = mode.delivery == Delivery::Push;
    let first = conn
        .request(Body::Fetch(pb::Fetch {
            after_id: 0,
            limit: 500,
            follow,
        }))
        .await?;
    let Response::Mailbox { entries, .. } = first else {
        bail!("unexpected answer to Fetch: {}", first.kind());
    };
    note(&entries, start, &mut seen, &out, &mut acker).await;
    const ACK_EVERY: Duration = Duration::from_millis(2);
    loop {
        if acker.pending.len() >= mode.ack_batch {
            acker.flush();
        }
        let idle = acker.pending.is_empty() && acker.in_flight.is_empty();
        if idle && stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        tokio::select! {
            Some(r) = acker.in_flight.next(), if !acker.in_flight.is_empty() => r?,
            d = conn.delivery(), if follow => match d {
                Some(d) => note(&d.entries, start, &mut seen, &out, &mut acker).await,
                None => bail!("the connection closed: {}", conn.closed_reason().unwrap_or_default()),
            },
            _ = conn.mailbox_changed(), if !follow => {
                // P442: fetch everything after the wake-up, page by page.
                loop {
                    let answer = conn
                        .request(Body::Fetch(pb::Fetch { after_id: 0, limit: 500, follow: false }))
                        .await?;
                    let Response::Mailbox { entries, more, .. } = answer else {
                        bail!("unexpected answer to Fetch: {}", answer.kind());
                    };
                    note(&entries, start, &mut seen, &out, &mut acker).await;
                    // Fetched entries stay until acked: ack before the next page.
                    acker.settle().await?;
                    if !more {
                        break;
                    }
                }
            }
            _ = tokio::time::sleep(ACK_EVERY), if !acker.pending.is_empty() => acker.flush(),
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
    }
}

/// A ticker of `period` that starts at a random point of it, so the clients' sends
/// are spread over time instead of arriving together in bursts.
fn spread(period: Duration) -> tokio::time::Interval {
    let first = tokio::time::Instant::now() + period.mul_f64(rand::random::<f64>());
    tokio::time::interval_at(first, period)
}

/// One paced sender per `(client, group)` of `who`, each every `every` until `until`.
fn paced_senders(
    c: &Common,
    conns: &[Arc<Connection>],
    who: Vec<(usize, Vec<u8>)>,
    every: Duration,
    start: Instant,
    until: Instant,
    errors: &Arc<AtomicU64>,
) -> Vec<tokio::task::JoinHandle<u64>> {
    who.into_iter()
        .map(|(i, group)| {
            tokio::spawn(send(
                Arc::clone(&conns[i]),
                i as u32,
                group,
                c.payload,
                Some(every),
                c.in_flight,
                start,
                Until::Time(until),
                Arc::clone(errors),
            ))
        })
        .collect()
}

/// How long a sender goes on.
#[derive(Clone, Copy)]
enum Until {
    Time(Instant),
    Count(u64),
}

/// The server's CPU, and the other processes', over a measured stretch of a run.
struct Window {
    pids: Vec<u32>,
    nodes: usize,
    database: &'static str,
    before: measure::ProcessSample,
    others: Option<Duration>,
    postgres: Option<Duration>,
}

impl Window {
    fn open(server: &server::Server) -> anyhow::Result<Self> {
        let pids = server.pids();
        Ok(Window {
            before: measure::sample_all(&pids)?,
            others: measure::others_cpu(&pids),
            postgres: server.database.as_ref().and(measure::named_cpu("postgres")),
            nodes: pids.len(),
            database: server.kind(),
            pids,
        })
    }

    /// A report of what the server used since `open`, over `elapsed`.
    fn close(
        &self,
        scenario: &'static str,
        c: &Common,
        elapsed: Duration,
    ) -> anyhow::Result<Report> {
        let after = measure::sample_all(&self.pids)?;
        let others = measure::others_cpu(&self.pids)
            .zip(self.others)
            .map(|(a, b)| a.saturating_sub(b));
        let postgres = self
            .postgres
            .zip(measure::named_cpu("postgres"))
            .map(|(b, a)| a.saturating_sub(b));
        Ok(Report {
            scenario,
            common: Some(c.clone()),
            elapsed,
            server_cpu: after.cpu.saturating_sub(self.before.cpu),
            // The database's share is reported on its own.
            others_cpu: others.map(|o| o.saturating_sub(postgres.unwrap_or_default())),
            database_cpu: postgres,
            nodes: self.nodes,
            database: self.database,
            server_rss_bytes: after.rss_bytes,
            ..Report::default()
        })
    }
}

/// One receiving task per connection, counting what each gets.
struct Receivers {
    stop: Arc<AtomicBool>,
    received: Vec<Arc<Mutex<Received>>>,
    tasks: Vec<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Receivers {
    fn start(conns: &[Arc<Connection>], c: &Common, start: Instant) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let received: Vec<Arc<Mutex<Received>>> = conns.iter().map(|_| Arc::default()).collect();
        let tasks = conns
            .iter()
            .zip(&received)
            .map(|(conn, r)| {
                tokio::spawn(receive(
                    Arc::clone(conn),
                    ReceiveMode::of(c),
                    start,
                    Arc::clone(&stop),
                    Arc::clone(r),
                ))
            })
            .collect();
        Receivers {
            stop,
            received,
            tasks,
        }
    }

    /// Stops the receivers once they acknowledged what they have; what each got.
    async fn finish(self) -> anyhow::Result<Vec<Arc<Mutex<Received>>>> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await??;
        }
        Ok(self.received)
    }
}

/// Sends every `every` (back to back when `None`), each of up to `window` sends
/// waiting for its `Sent` at once, until `until`; returns how many the server
/// acknowledged.
#[allow(clippy::too_many_arguments)]
async fn send(
    conn: Arc<Connection>,
    index: u32,
    group: Vec<u8>,
    payload: usize,
    every: Option<Duration>,
    window: usize,
    start: Instant,
    until: Until,
    errors: Arc<AtomicU64>,
) -> u64 {
    let mut tick = spread(every.unwrap_or(Duration::from_secs(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut acked = 0u64;
    let mut seq = 0u64;
    let mut body = vec![0u8; payload.max(HEADER)];
    rand::thread_rng().fill_bytes(&mut body[HEADER..]);
    let mut in_flight = futures::stream::FuturesUnordered::new();
    let mut count = |r: Result<Response, hush_client::ClientError>| match r {
        Ok(Response::Sent { .. }) => acked += 1,
        _ => {
            errors.fetch_add(1, Ordering::Relaxed);
        }
    };
    let going = |seq: u64| match until {
        Until::Time(t) => Instant::now() < t,
        Until::Count(n) => seq < n,
    };
    while going(seq) {
        let paced = async {
            if every.is_some() {
                tick.tick().await;
            }
        };
        tokio::select! {
            Some(r) = in_flight.next(), if !in_flight.is_empty() => count(r),
            () = paced, if in_flight.len() < window.max(1) => {
                stamp(&mut body, index, seq, start);
                let request = send_body(&group, &body, index, seq);
                let conn = Arc::clone(&conn);
                in_flight.push(async move { conn.request(request).await });
                seq += 1;
            }
        }
    }
    while let Some(r) = in_flight.next().await {
        count(r);
    }
    acked
}

/// Accounts in pairs, each pair with its 1:1 group, all connected.
struct Setup {
    server: server::Server,
    accounts: Vec<Account>,
    conns: Vec<Arc<Connection>>,
    /// The group of pair `i / 2`.
    groups: Vec<Vec<u8>>,
}

/// `n` registered accounts, each with an authenticated connection.
async fn accounts(
    server: &server::Server,
    n: usize,
) -> anyhow::Result<(Vec<Account>, Vec<Arc<Connection>>)> {
    let mut accounts = Vec::with_capacity(n);
    for chunk in (0..n).collect::<Vec<_>>().chunks(8) {
        let batch = futures::future::join_all(chunk.iter().map(|i| register(server, *i))).await;
        for a in batch {
            accounts.push(a?);
        }
    }
    let mut conns = Vec::with_capacity(n);
    for a in &accounts {
        conns.push(Arc::new(connect(server, a).await?));
    }
    Ok((accounts, conns))
}

async fn pairs(c: &Common) -> anyhow::Result<Setup> {
    if c.clients < 2 || !c.clients.is_multiple_of(2) {
        bail!("--clients must be an even number of at least 2");
    }
    let server = server::start(c).await?;
    let (accounts, conns) = accounts(&server, c.clients).await?;
    // One 1:1 group per pair (the Welcome is a stand-in: receivers never decrypt).
    let mut groups = Vec::with_capacity(c.clients / 2);
    for pair in 0..c.clients / 2 {
        let (a, b) = (&accounts[2 * pair], &accounts[2 * pair + 1]);
        let mut gid = vec![0u8; 16];
        rand::thread_rng().fill_bytes(&mut gid);
        let created = conns[2 * pair]
            .request(Body::CreateGroup(pb::CreateGroup {
                channel: None,
                group_id: gid.clone().into(),
                name: String::new(),
                direct_peer: b.name.to_string(),
                welcome: vec![0u8; 8].into(),
                members: vec![
                    a.device.as_bytes().to_vec().into(),
                    b.device.as_bytes().to_vec().into(),
                ],
                client_key: Default::default(),
                group_info: Default::default(),
            }))
            .await?;
        if !matches!(created, Response::GroupCreated { .. }) {
            bail!("could not create a group: {}", created.kind());
        }
        groups.push(gid);
    }
    Ok(Setup {
        server,
        accounts,
        conns,
        groups,
    })
}

/// Totals what every receiver saw against what it should have: receiver `i` expects
/// `expected[i]` messages.
async fn tally(report: &mut Report, expected: &[u64], received: &[Arc<Mutex<Received>>]) {
    let mut latencies = Vec::new();
    for (want, r) in expected.iter().zip(received) {
        let r = r.lock().await;
        report.sent += want;
        report.delivered += r.count;
        report.duplicated += r.duplicated;
        report.lost += want.saturating_sub(r.count);
        latencies.extend_from_slice(&r.latencies_us);
    }
    report.latency_us = measure::percentiles(latencies);
}

/// In pairs, client `i` sends to `i ^ 1`: what each receiver expects.
fn from_partners(acked: &[u64]) -> Vec<u64> {
    (0..acked.len()).map(|i| acked[i ^ 1]).collect()
}

/// Writes the header of a message: sender, sequence number, send time.
fn stamp(body: &mut [u8], index: u32, seq: u64, start: Instant) {
    body[0..4].copy_from_slice(&index.to_be_bytes());
    body[4..12].copy_from_slice(&seq.to_be_bytes());
    body[12..20].copy_from_slice(&(start.elapsed().as_micros() as u64).to_be_bytes());
}

fn send_body(group: &[u8], body: &[u8], index: u32, seq: u64) -> Body {
    let mut id = [0u8; 16];
    id[0..4].copy_from_slice(&index.to_be_bytes());
    id[4..12].copy_from_slice(&seq.to_be_bytes());
    Body::Send(pb::Send {
        group_id: group.to_vec().into(),
        epoch: 1,
        ciphertext: body.to_vec().into(),
        client_message_id: id.to_vec().into(),
    })
}

/// `direct`: pairs of connected clients, each sending 1:1 to its partner.
pub async fn direct(c: &Common) -> anyhow::Result<Report> {
    let Setup {
        server,
        accounts,
        conns,
        groups,
    } = pairs(c).await?;
    let start = Instant::now();
    let listening = Receivers::start(&conns, c, start);
    let received = &listening.received;
    let window = Window::open(&server)?;
    let sending_started = Instant::now();
    let until = sending_started + Duration::from_secs(c.seconds);
    let every = Duration::from_secs_f64(c.clients as f64 / c.rate.max(1) as f64);
    let errors = Arc::new(AtomicU64::new(0));
    let who: Vec<(usize, Vec<u8>)> = (0..c.clients).map(|i| (i, groups[i / 2].clone())).collect();
    let senders = paced_senders(c, &conns, who, every, start, until, &errors);
    let mut acked = vec![0u64; c.clients];
    for (i, s) in senders.into_iter().enumerate() {
        acked[i] = s.await?;
    }
    // Let the receivers drain what was acknowledged, bounded.
    drained(&from_partners(&acked), received, Duration::from_secs(30)).await;
    let elapsed = sending_started.elapsed();
    let mut report = window.close("direct", c, elapsed)?;
    let received = listening.finish().await?;
    tally(&mut report, &from_partners(&acked), &received).await;
    warn_refused(&errors);
    drop(conns);
    drop(accounts);
    Ok(report)
}

/// `direct --mls`: the same pairs, through the real client library end to end: each
/// client sends with `Client::send` (MLS encryption, the outbox, the server) and
/// receives through its engine (fetch, MLS decryption, local history, ack), counted
/// from its event stream. Client CPU is part of the cost, so rates are far lower.
pub async fn direct_mls(c: &Common) -> anyhow::Result<Report> {
    use hush_client::Target;
    use hush_client::events::Event;

    if c.clients < 2 || !c.clients.is_multiple_of(2) {
        bail!("--clients must be an even number of at least 2");
    }
    let server = server::start(c).await?;
    let mut accounts = Vec::with_capacity(c.clients);
    for i in 0..c.clients {
        accounts.push(register(&server, i).await?);
    }
    let mut clients = Vec::with_capacity(c.clients);
    for a in &accounts {
        clients.push(Arc::new(
            Client::open(a.dir.path(), ClientOptions::default()).await?,
        ));
    }
    let targets: Vec<Target> = (0..c.clients)
        .map(|i| Target::parse(accounts[i ^ 1].name.as_str()))
        .collect::<Result<_, _>>()?;
    // The first message of each pair creates its 1:1; both sides then know it.
    for pair in 0..c.clients / 2 {
        clients[2 * pair]
            .send(&targets[2 * pair], "hello")
            .await
            .context("creating a 1:1")?;
        clients[2 * pair + 1].sync().await?;
    }
    let start = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let received: Vec<Arc<Mutex<Received>>> = (0..c.clients).map(|_| Arc::default()).collect();
    let listeners: Vec<_> = clients
        .iter()
        .zip(&received)
        .map(|(client, out)| {
            let mut events = client.events();
            let (stop, out) = (Arc::clone(&stop), Arc::clone(out));
            tokio::spawn(async move {
                let mut seen = HashSet::new();
                loop {
                    let next = tokio::time::timeout(Duration::from_millis(50), events.next()).await;
                    let event = match next {
                        Ok(Some(e)) => e,
                        Ok(None) => return,
                        Err(_) if stop.load(Ordering::Relaxed) => return,
                        Err(_) => continue,
                    };
                    let Event::Message {
                        text,
                        outgoing: false,
                        ..
                    } = event
                    else {
                        continue;
                    };
                    let mut parts = text.split(' ').skip(1).map(|p| p.parse::<u64>().ok());
                    let (Some(Some(sender)), Some(Some(seq)), Some(Some(sent_us))) =
                        (parts.next(), parts.next(), parts.next())
                    else {
                        continue;
                    };
                    let now_us = start.elapsed().as_micros() as u64;
                    let mut r = out.lock().await;
                    if seen.insert((sender as u32, seq)) {
                        r.count += 1;
                        r.latencies_us.push(now_us.saturating_sub(sent_us));
                    } else {
                        r.duplicated += 1;
                    }
                }
            })
        })
        .collect();
    let window = Window::open(&server)?;
    let sending_started = Instant::now();
    let until = sending_started + Duration::from_secs(c.seconds);
    let every = Duration::from_secs_f64(c.clients as f64 / c.rate.max(1) as f64);
    let errors = Arc::new(AtomicU64::new(0));
    let senders: Vec<_> = (0..c.clients)
        .map(|i| {
            let (client, target, errors) = (
                Arc::clone(&clients[i]),
                targets[i].clone(),
                Arc::clone(&errors),
            );
            tokio::spawn(async move {
                let mut tick = spread(every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut acked = 0u64;
                let mut seq = 0u64;
                while Instant::now() < until {
                    tick.tick().await;
                    let text = format!("bench {i} {seq} {}", start.elapsed().as_micros());
                    seq += 1;
                    match client.send(&target, &text).await {
                        Ok(_) => acked += 1,
                        Err(_) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                acked
            })
        })
        .collect();
    let mut acked = vec![0u64; c.clients];
    for (i, s) in senders.into_iter().enumerate() {
        acked[i] = s.await?;
    }
    drained(&from_partners(&acked), &received, Duration::from_secs(60)).await;
    let elapsed = sending_started.elapsed();
    let mut report = window.close("direct-mls", c, elapsed)?;
    stop.store(true, Ordering::Relaxed);
    for l in listeners {
        l.await?;
    }
    tally(&mut report, &from_partners(&acked), &received).await;
    let refused = errors.load(Ordering::Relaxed);
    if refused > 0 {
        eprintln!("warning: {refused} sends failed (not counted as sent)");
    }
    for client in clients {
        if let Ok(client) = Arc::try_unwrap(client) {
            client.close().await;
        }
    }
    drop(accounts);
    Ok(report)
}

/// `offline`: every sender queues its share of `rate × seconds` messages, as fast as
/// the server takes them, for a partner that is not reading; then the partners read
/// and acknowledge everything. Reports both rates.
pub async fn offline(c: &Common) -> anyhow::Result<Report> {
    let Setup {
        server,
        accounts,
        conns,
        groups,
    } = pairs(c).await?;
    let total = c.rate.saturating_mul(c.seconds).max(1);
    let per_sender = total.div_ceil((c.clients / 2) as u64);
    let start = Instant::now();
    let errors = Arc::new(AtomicU64::new(0));
    let cpu0 = server.sample()?;
    let t0 = Instant::now();
    let senders: Vec<_> = (0..c.clients)
        .step_by(2)
        .map(|i| {
            let conn = Arc::clone(&conns[i]);
            let group = groups[i / 2].clone();
            let errors = Arc::clone(&errors);
            let payload = c.payload;
            let window = c.in_flight;
            tokio::spawn(async move {
                send(
                    conn,
                    i as u32,
                    group,
                    payload,
                    None,
                    window,
                    start,
                    Until::Count(per_sender),
                    errors,
                )
                .await
            })
        })
        .collect();
    let mut acked = vec![0u64; c.clients];
    for (k, s) in senders.into_iter().enumerate() {
        acked[2 * k] = s.await?;
    }
    let stored = t0.elapsed();
    let cpu1 = server.sample()?;
    let stop = Arc::new(AtomicBool::new(false));
    let received: Vec<Arc<Mutex<Received>>> = (0..c.clients).map(|_| Arc::default()).collect();
    let t1 = Instant::now();
    let receivers: Vec<_> = (1..c.clients)
        .step_by(2)
        .map(|i| {
            tokio::spawn(receive(
                Arc::clone(&conns[i]),
                ReceiveMode::of(c),
                start,
                Arc::clone(&stop),
                Arc::clone(&received[i]),
            ))
        })
        .collect();
    drained(&from_partners(&acked), &received, Duration::from_secs(120)).await;
    let drain = t1.elapsed();
    let cpu2 = server.sample()?;
    stop.store(true, Ordering::Relaxed);
    for r in receivers {
        r.await??;
    }
    let mut report = Report {
        scenario: "offline",
        common: Some(c.clone()),
        nodes: server.nodes.len(),
        database: server.kind(),
        elapsed: stored + drain,
        server_cpu: cpu2.cpu.saturating_sub(cpu0.cpu),
        server_rss_bytes: cpu2.rss_bytes,
        ..Report::default()
    };
    tally(&mut report, &from_partners(&acked), &received).await;
    report.phases = vec![
        Phase {
            name: "store",
            messages: report.sent,
            elapsed: stored,
            server_cpu: cpu1.cpu.saturating_sub(cpu0.cpu),
        },
        Phase {
            name: "drain",
            messages: report.delivered,
            elapsed: drain,
            server_cpu: cpu2.cpu.saturating_sub(cpu1.cpu),
        },
    ];
    warn_refused(&errors);
    drop(conns);
    drop(accounts);
    Ok(report)
}

/// `group`: the clients in groups of `--group-size`, each group a named group whose
/// first member sends (the groups together at `--rate` messages per second) and every
/// other member receives: the fan-out. A delivery is one message to one member.
pub async fn group(c: &Common) -> anyhow::Result<Report> {
    let size = c.group_size;
    if size < 2 || c.clients < size || !c.clients.is_multiple_of(size) {
        bail!("--clients must be a multiple of --group-size (at least 2)");
    }
    let server = server::start(c).await?;
    let (accounts, conns) = accounts(&server, c.clients).await?;
    let groups = c.clients / size;
    let mut ids = Vec::with_capacity(groups);
    for g in 0..groups {
        let members = &accounts[g * size..(g + 1) * size];
        let mut gid = vec![0u8; 16];
        rand::thread_rng().fill_bytes(&mut gid);
        let created = conns[g * size]
            .request(Body::CreateGroup(pb::CreateGroup {
                channel: None,
                group_id: gid.clone().into(),
                name: format!("bench{g}"),
                direct_peer: String::new(),
                welcome: vec![0u8; 8].into(),
                members: members
                    .iter()
                    .map(|m| m.device.as_bytes().to_vec().into())
                    .collect(),
                client_key: Default::default(),
                group_info: Default::default(),
            }))
            .await?;
        if !matches!(created, Response::GroupCreated { .. }) {
            bail!("could not create a group: {}", created.kind());
        }
        // P460: each member accepts the creator's invitation, as clients do by default.
        let creator = members[0].name.to_string();
        let answers =
            futures::future::join_all(conns[g * size + 1..(g + 1) * size].iter().map(|conn| {
                conn.request(Body::AnswerRequest(pb::AnswerRequest {
                    inviter: creator.clone(),
                    accept: true,
                }))
            }))
            .await;
        for a in answers {
            match a {
                Ok(Response::RequestAnswered) => {}
                Ok(other) => bail!("unexpected answer to AnswerRequest: {}", other.kind()),
                Err(e) => bail!("accepting the invitation: {e}"),
            }
        }
        ids.push(gid);
    }
    let start = Instant::now();
    let listening = Receivers::start(&conns, c, start);
    let received = &listening.received;
    let window = Window::open(&server)?;
    let sending_started = Instant::now();
    let until = sending_started + Duration::from_secs(c.seconds);
    let every = Duration::from_secs_f64(groups as f64 / c.rate.max(1) as f64);
    let errors = Arc::new(AtomicU64::new(0));
    let who: Vec<(usize, Vec<u8>)> = (0..groups).map(|g| (g * size, ids[g].clone())).collect();
    let senders = paced_senders(c, &conns, who, every, start, until, &errors);
    let mut acked = Vec::with_capacity(groups);
    for s in senders {
        acked.push(s.await?);
    }
    // Every member but the sender expects every acknowledged message of its group.
    let expected: Vec<u64> = (0..c.clients)
        .map(|i| if i % size == 0 { 0 } else { acked[i / size] })
        .collect();
    drained(&expected, received, Duration::from_secs(60)).await;
    let elapsed = sending_started.elapsed();
    let mut report = window.close("group", c, elapsed)?;
    let received = listening.finish().await?;
    tally(&mut report, &expected, &received).await;
    report.messages = Some(acked.iter().sum());
    warn_refused(&errors);
    drop(conns);
    drop(accounts);
    Ok(report)
}

/// Waits (bounded) until receiver `i` has `expected[i]` messages.
async fn drained(expected: &[u64], received: &[Arc<Mutex<Received>>], within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let mut done = true;
        for (want, r) in expected.iter().zip(received) {
            if r.lock().await.count < *want {
                done = false;
                break;
            }
        }
        if done || Instant::now() > deadline {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `login`: OPAQUE logins against one account. Phase `full`: `--rate × --seconds`
/// complete logins (`--clients` at a time), each a new TLS connection, `LoginStart`,
/// the client's key stretching (argon2, on this machine's other cores) and
/// `LoginFinish`, which creates a device and a session: the server's CPU per login.
/// Phase `start`: connections that stop after `LoginStart` as fast as the clients
/// can open them, so the server's side of the handshake, not argon2, is the limit.
pub async fn login(c: &Common) -> anyhow::Result<Report> {
    use hush_client::hush_proto::auth::OpaqueSuite;
    use hush_client::hush_proto::auth::opaque_ke::rand::rngs::OsRng;
    use hush_client::hush_proto::auth::opaque_ke::{ClientLogin, ClientLoginFinishParameters};

    let server = server::start(c).await?;
    let account = register(&server, 0).await?;
    let fp = Fingerprint::parse(&server.fingerprint)?;
    let known = KnownServers::new(account.dir.path());
    let first_use = FirstUse::Expect(fp);
    let name = account.name.to_string();
    let total = c.rate.saturating_mul(c.seconds).max(1);

    // Login `k`: connect (to the nodes in turn), LoginStart and, when `finish`,
    // LoginFinish.
    let (known, first_use, name, nodes) = (&known, &first_use, &name, &server);
    let one = |finish: bool, k: u64| async move {
        let conn = Connection::connect(nodes.addr(k as usize), known, first_use).await?;
        let start = ClientLogin::<OpaqueSuite>::start(&mut OsRng, PASSWORD)
            .map_err(|e| anyhow::anyhow!("OPAQUE: {e:?}"))?;
        let challenge = conn
            .request(Body::LoginStart(pb::LoginStart {
                username: name.clone(),
                credential_request: start.message.serialize().to_vec().into(),
            }))
            .await?;
        let Response::LoginChallenge(response) = challenge else {
            bail!("unexpected answer to LoginStart: {}", challenge.kind());
        };
        if finish {
            let state = start.state;
            let finished = tokio::task::spawn_blocking(move || {
                state.finish(
                    &mut OsRng,
                    PASSWORD,
                    *response,
                    ClientLoginFinishParameters::default(),
                )
            })
            .await?
            .map_err(|e| anyhow::anyhow!("OPAQUE: {e:?}"))?;
            let done = conn
                .request(Body::LoginFinish(pb::LoginFinish {
                    credential_finalization: finished.message.serialize().to_vec().into(),
                    device_name: "bench".into(),
                    second_factor: String::new(),
                }))
                .await?;
            if !matches!(done, Response::LoggedIn { .. }) {
                bail!("unexpected answer to LoginFinish: {}", done.kind());
            }
        }
        conn.close().await;
        Ok(())
    };
    let run = |finish: bool, n: u64| {
        let one = &one;
        async move {
            let mut ok = 0u64;
            let mut in_flight = futures::stream::FuturesUnordered::new();
            let mut started = 0u64;
            while ok < n {
                while started < n && in_flight.len() < c.clients.max(1) {
                    in_flight.push(one(finish, started));
                    started += 1;
                }
                match in_flight.next().await {
                    Some(Ok(())) => ok += 1,
                    Some(Err(e)) => return Err(e),
                    None => break,
                }
            }
            Ok::<u64, anyhow::Error>(ok)
        }
    };
    let cpu0 = server.sample()?;
    let t0 = Instant::now();
    let full = run(true, total).await?;
    let full_time = t0.elapsed();
    let cpu1 = server.sample()?;
    let t1 = Instant::now();
    let starts = run(false, total.saturating_mul(4)).await?;
    let start_time = t1.elapsed();
    let cpu2 = server.sample()?;
    let mut report = Report {
        scenario: "login",
        common: Some(c.clone()),
        nodes: server.nodes.len(),
        database: server.kind(),
        elapsed: full_time + start_time,
        server_cpu: cpu2.cpu.saturating_sub(cpu0.cpu),
        server_rss_bytes: cpu2.rss_bytes,
        ..Report::default()
    };
    report.phases = vec![
        Phase {
            name: "full",
            messages: full,
            elapsed: full_time,
            server_cpu: cpu1.cpu.saturating_sub(cpu0.cpu),
        },
        Phase {
            name: "start",
            messages: starts,
            elapsed: start_time,
            server_cpu: cpu2.cpu.saturating_sub(cpu1.cpu),
        },
    ];
    let per_login = cpu1.cpu.saturating_sub(cpu0.cpu).as_secs_f64() / full.max(1) as f64;
    eprintln!(
        "logins per core     {:.0}/s (1 s over the server CPU of one full login)",
        1.0 / per_login.max(1e-9)
    );
    Ok(report)
}

/// `idle`: `--clients` authenticated sessions that do nothing; the server's memory per
/// session (RSS after they connect less RSS before, over their number), and what is
/// left after they close.
pub async fn idle(c: &Common) -> anyhow::Result<Report> {
    let server = server::start(c).await?;
    // Two accounts; every session is one of their devices resuming (the account cap
    // is opened up for the benchmark).
    let accounts = vec![register(&server, 0).await?, register(&server, 1).await?];
    // Warm up: one session of each, so buffers the first ones allocate are not counted.
    let mut sessions = Vec::with_capacity(c.clients);
    for a in &accounts {
        sessions.push(connect(&server, a).await?);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = server.sample()?;
    let t0 = Instant::now();
    for i in 0..c.clients {
        sessions.push(connect(&server, &accounts[i % 2]).await?);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let during = server.sample()?;
    let elapsed = t0.elapsed();
    for s in sessions.drain(..) {
        s.close().await;
    }
    // hushd's allocator (mimalloc) gives freed pages back 1 s after they were freed,
    // at its next allocations: a little activity, as a live server has.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(1_100)).await;
        connect(&server, &accounts[0]).await?.close().await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after = server.sample()?;
    let per_session = during.rss_bytes.saturating_sub(before.rss_bytes) / c.clients.max(1) as u64;
    let kept = after.rss_bytes.saturating_sub(before.rss_bytes);
    let mut report = Report {
        scenario: "idle",
        common: Some(c.clone()),
        nodes: server.nodes.len(),
        database: server.kind(),
        elapsed,
        server_cpu: during.cpu.saturating_sub(before.cpu),
        server_rss_bytes: during.rss_bytes,
        ..Report::default()
    };
    report.phases = vec![Phase {
        name: "connect",
        messages: c.clients as u64,
        elapsed,
        server_cpu: during.cpu.saturating_sub(before.cpu),
    }];
    eprintln!(
        "idle sessions       {} open: {} bytes of server RSS each; {} bytes kept after they closed",
        c.clients, per_session, kept
    );
    report.per_session_bytes = Some(per_session);
    report.kept_after_close_bytes = Some(kept);
    drop(accounts);
    Ok(report)
}

/// Says how many sends the server refused (they are not counted as sent).
fn warn_refused(errors: &std::sync::atomic::AtomicU64) {
    let refused = errors.load(Ordering::Relaxed);
    if refused > 0 {
        eprintln!("warning: {refused} sends were refused (not counted as sent)");
    }
}
