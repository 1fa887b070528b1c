//! End-to-end encrypted files (P560–P564) through a real hushd with real hush
//! processes: offers in recv and history, what the server's data dir holds, tampered
//! blobs, quotas, names that try to leave the directory, removed members, resumed
//! transfers and bounded memory.
mod inproc;
mod raw;

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use hush_client::files::Progress;
use hush_proto::pb::{self, client_frame::Body, server_frame};
use hush_testing::{Client, Server, bin, fails, files_below, find_bytes, json_lines, ok};
use tokio::io::AsyncWriteExt;

const PW: &str = "correct horse battery";
const MARKER: &[u8] = b"PLAINTEXT-MARKER-4b1d";

/// `len` bytes of a pattern that does not repeat per chunk, with MARKER inside.
fn content(len: usize) -> Vec<u8> {
    let mut v: Vec<u8> = (0..len as u64)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    for at in [0, len / 2] {
        if at + MARKER.len() <= len {
            v[at..at + MARKER.len()].copy_from_slice(MARKER);
        }
    }
    v
}

fn write_file(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, data).unwrap();
    p
}

fn blobs(server: &Server) -> PathBuf {
    server.data_dir().join("blobs")
}

fn blob_files(server: &Server) -> Vec<PathBuf> {
    files_below(&blobs(server))
}

/// `hush file get ID --output DIR`.
fn get_into(c: &Client, id: &str, dir: &Path) -> std::process::Output {
    c.run("", &["file", "get", id, "--output", dir.to_str().unwrap()])
}

/// `hush file send` with --json, parsed.
#[track_caller]
fn send_file(c: &Client, to: &str, path: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["file", "send", to, path.to_str().unwrap(), "--json"];
    args.extend_from_slice(extra);
    json_lines(&ok(&c.run("", &args))).remove(0)
}

#[test]
fn p560_a_file_reaches_recv_history_and_disk_while_the_server_holds_only_ciphertext() {
    let server = Server::start(&[]);
    let v = hush_testing::registered(&server, &["ann", "ben"], PW);
    let (ann, ben) = (&v[0], &v[1]);
    let work = tempfile::tempdir().unwrap();
    let data = content(3 * 1024 * 1024 + 12_345);
    let path = write_file(work.path(), "report.bin", &data);

    let sent = ann.run("", &["file", "send", "ben", path.to_str().unwrap()]);
    assert!(
        sent.stderr.is_empty(),
        "no progress bar when stderr is not a terminal: {}",
        String::from_utf8_lossy(&sent.stderr)
    );
    let out = ok(&sent);
    let line = out.trim();
    assert!(
        line.starts_with("sent file ") && line.ends_with("(report.bin, 3.0 MiB) to ben"),
        "{line}"
    );
    let file_id = line.split_whitespace().nth(2).unwrap().to_owned();
    assert_eq!(file_id.len(), 32);
    // The server has the sealed bytes only.
    assert_eq!(blob_files(&server).len(), 1);
    assert!(
        find_bytes(&server.data_dir(), MARKER).is_none(),
        "the server's data dir holds plaintext"
    );

    let events = ben.recv(5);
    let offer = events
        .iter()
        .find(|e| e["type"] == "file")
        .unwrap_or_else(|| panic!("no offer in {events:?}"));
    assert_eq!(offer["file_id"], file_id.as_str());
    assert_eq!(offer["conversation"], "ann");
    assert_eq!(offer["from"], "ann");
    assert_eq!(offer["name"], "report.bin");
    assert_eq!(offer["size"], data.len() as u64);
    assert_eq!(offer["media_type"], "application/octet-stream");
    assert_eq!(offer["id"].as_str().unwrap().len(), 32);
    assert!(offer["sent_at"].as_str().unwrap().ends_with('Z'));
    let history = ben.history("ann", 10);
    assert!(
        history
            .iter()
            .any(|e| e["type"] == "file" && e["file_id"] == file_id.as_str())
    );
    let mine = ann.history("ben", 10);
    assert!(
        mine.iter()
            .any(|e| e["type"] == "file" && e["outgoing"] == true && e["state"] == "sent"),
        "{mine:?}"
    );

    let down = tempfile::tempdir().unwrap();
    let got = ok(&get_into(ben, &file_id, down.path()));
    assert!(got.contains("saved file"), "{got}");
    assert_eq!(std::fs::read(down.path().join("report.bin")).unwrap(), data);
    assert_eq!(
        std::fs::read_dir(down.path()).unwrap().count(),
        1,
        "no partial file is left"
    );
    // Ben's only device fetched it: the server deletes it.
    assert!(blob_files(&server).is_empty(), "{:?}", blob_files(&server));
    let listed = json_lines(&ok(&ben.run("", &["files", "ann", "--json"])));
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["file_id"], file_id.as_str());
    assert!(
        listed[0]["saved_to"]
            .as_str()
            .unwrap()
            .ends_with("report.bin")
    );
    // Never overwritten without --force.
    fails(&get_into(ben, &file_id, down.path()), 1, "--force");
    fails(&ben.run("", &["file", "get", "not-an-id"]), 2, "file_id");
}

#[test]
fn p563_an_offered_name_never_writes_outside_the_target_directory() {
    let server = Server::start(&[]);
    let v = hush_testing::registered(&server, &["ann", "ben"], PW);
    let work = tempfile::tempdir().unwrap();
    let path = write_file(work.path(), "evil.txt", b"owned");
    let sent = send_file(&v[0], "ben", &path, &["--name", "../../etc/passwd"]);
    let id = sent["file_id"].as_str().unwrap();
    let offer = v[1]
        .recv(5)
        .into_iter()
        .find(|e| e["type"] == "file")
        .unwrap();
    assert_eq!(offer["name"], "../../etc/passwd", "shown as offered");

    let root = tempfile::tempdir().unwrap();
    let target = root.path().join("a").join("b");
    std::fs::create_dir_all(&target).unwrap();
    // No --output: the current directory.
    let out = Command::new(bin("hush"))
        .arg("--home")
        .arg(v[1].home.path())
        .args(["file", "get", id])
        .current_dir(&target)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    ok(&out);
    assert_eq!(std::fs::read(target.join("passwd")).unwrap(), b"owned");
    let everything = files_below(root.path());
    assert_eq!(everything, vec![target.join("passwd")], "{everything:?}");
}

#[test]
fn p562_a_tampered_blob_is_refused_and_leaves_no_file() {
    let server = Server::start(&[]);
    let v = hush_testing::registered(&server, &["ann", "ben"], PW);
    let work = tempfile::tempdir().unwrap();
    let data = content(300 * 1024);
    let path = write_file(work.path(), "data.bin", &data);
    let id = send_file(&v[0], "ben", &path, &[])["file_id"]
        .as_str()
        .unwrap()
        .to_owned();
    v[1].recv(5);
    let blob = blobs(&server).join(&id);
    let original = std::fs::read(&blob).unwrap();
    let sealed_chunk = 64 * 1024 + 16;

    let mut flipped = original.clone();
    flipped[sealed_chunk + 100] ^= 1;
    let mut truncated = original.clone();
    truncated.truncate(2 * sealed_chunk);
    let mut reordered = original.clone();
    let (a, b) = reordered.split_at_mut(sealed_chunk);
    a.swap_with_slice(&mut b[..sealed_chunk]);
    for (what, bytes) in [
        ("flipped", flipped),
        ("truncated", truncated),
        ("reordered", reordered),
    ] {
        std::fs::write(&blob, &bytes).unwrap();
        let down = tempfile::tempdir().unwrap();
        let out = get_into(&v[1], &id, down.path());
        fails(&out, 1, "integrity check");
        assert_eq!(
            std::fs::read_dir(down.path()).unwrap().count(),
            0,
            "{what}: nothing is left behind"
        );
    }
    // The intact blob still opens.
    std::fs::write(&blob, &original).unwrap();
    let down = tempfile::tempdir().unwrap();
    ok(&get_into(&v[1], &id, down.path()));
    assert_eq!(std::fs::read(down.path().join("data.bin")).unwrap(), data);
}

#[test]
fn p560_too_large_and_over_quota_are_refused_before_any_byte_is_sent() {
    let server = Server::with_limits("max_file_bytes = 100000\naccount_file_bytes = 150000");
    let v = hush_testing::registered(&server, &["ann", "ben"], PW);
    let work = tempfile::tempdir().unwrap();
    let big = write_file(work.path(), "big.bin", &content(120_000));
    let out = v[0].run("", &["file", "send", "ben", big.to_str().unwrap()]);
    fails(&out, 1, "too large");
    assert!(String::from_utf8_lossy(&out.stderr).contains("97.7 KiB"));
    assert!(blob_files(&server).is_empty(), "nothing was uploaded");

    let small = write_file(work.path(), "small.bin", &content(90_000));
    send_file(&v[0], "ben", &small, &[]);
    let other = write_file(work.path(), "other.bin", &content(90_000));
    fails(
        &v[0].run("", &["file", "send", "ben", other.to_str().unwrap()]),
        1,
        "an account may hold",
    );
    assert_eq!(
        blob_files(&server).len(),
        1,
        "the refused file sent nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p560_a_member_removed_before_a_file_was_sent_cannot_get_it() {
    let server = Server::start(&[]);
    let v = hush_testing::registered(&server, &["ann", "ben", "cat"], PW);
    let (ann, ben, cat) = (&v[0], &v[1], &v[2]);
    ok(&ann.run("", &["group", "create", "team", "--members", "ben,cat"]));
    ben.recv(3);
    cat.recv(3);
    ok(&ann.run("", &["group", "remove", "team", "cat"]));
    cat.recv(3);
    let work = tempfile::tempdir().unwrap();
    let path = write_file(work.path(), "plan.txt", &content(10_000));
    let id = send_file(ann, "#team", &path, &[])["file_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(ben.recv(5).iter().any(|e| e["type"] == "file"));
    assert!(
        !cat.recv(3).iter().any(|e| e["type"] == "file"),
        "cat never gets the offer (nor its key)"
    );
    fails(&cat.run("", &["file", "get", &id]), 1, "no file");

    // Even asking the server directly for the sealed bytes is refused.
    let mut s = raw::connect(&server).await;
    raw::authenticate(&mut s, cat.home.path()).await;
    s.write_all(&raw::request(
        7,
        Body::FileDownload(pb::FileDownload {
            file_id: hex(&id).into(),
            offset: 0,
            len: 1024,
        }),
    ))
    .await
    .unwrap();
    let f = raw::read_frame(&mut s).await.unwrap();
    match f.body {
        Some(server_frame::Body::Error(e)) => {
            assert_eq!(e.code, hush_proto::ErrorCode::Forbidden as i32, "{e:?}")
        }
        other => panic!("a removed member got {other:?}"),
    }
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p561_interrupted_uploads_and_downloads_resume_where_they_stopped() {
    let server = Server::start(&[]);
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let opts = hush_client::ClientOptions::default;
    let ann = inproc::register(&server, a.path(), "ann", opts()).await;
    let ben = inproc::register(&server, b.path(), "ben", opts()).await;
    let work = tempfile::tempdir().unwrap();
    let data = content(5 * 1024 * 1024 + 7);
    let path = write_file(work.path(), "movie.bin", &data);

    // Stop after 2 MiB.
    let mut stop_at = |p: Progress| {
        if p.done >= 2 * 1024 * 1024 {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    };
    let to_ben = inproc::to("ben");
    let err = ann
        .send_file(&to_ben, &path, None, &mut stop_at)
        .await
        .unwrap_err();
    assert!(
        matches!(err, hush_client::ClientError::Interrupted),
        "{err}"
    );
    let held = std::fs::metadata(blob_files(&server)[0].clone())
        .unwrap()
        .len();
    assert!(held >= 2 * 1024 * 1024, "{held}");
    // The same send resumes: it starts from what the server holds.
    let mut seen_first = None;
    let mut watch = |p: Progress| {
        seen_first.get_or_insert(p.done);
        ControlFlow::Continue(())
    };
    let sent = ann
        .send_file(&to_ben, &path, None, &mut watch)
        .await
        .unwrap();
    assert!(
        sent.resumed_from >= 2 * 1024 * 1024,
        "{}",
        sent.resumed_from
    );
    assert!(seen_first.unwrap() > 2 * 1024 * 1024);
    assert_eq!(
        blob_files(&server).len(),
        1,
        "one file, not a second upload"
    );

    ben.sync().await.unwrap();
    let down = tempfile::tempdir().unwrap();
    let err = ben
        .get_file(sent.file_id, Some(down.path()), false, &mut stop_at)
        .await
        .unwrap_err();
    assert!(
        matches!(err, hush_client::ClientError::Interrupted),
        "{err}"
    );
    assert!(!down.path().join("movie.bin").exists());
    let saved = ben
        .get_file(sent.file_id, Some(down.path()), false, &mut |_| {
            ControlFlow::Continue(())
        })
        .await
        .unwrap();
    assert!(saved.resumed_from >= 1024 * 1024, "{}", saved.resumed_from);
    assert_eq!(std::fs::read(&saved.path).unwrap(), data);
    ann.close().await;
    ben.close().await;
}

#[test]
fn p560_a_200_mb_file_round_trips_in_bounded_memory() {
    let server = Server::start(&[]);
    let v = hush_testing::registered(&server, &["ann", "ben"], PW);
    let work = tempfile::tempdir().unwrap();
    let path = work.path().join("large.bin");
    {
        use std::io::Write;
        let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
        let block = content(1024 * 1024);
        for _ in 0..200 {
            f.write_all(&block).unwrap();
        }
    }
    let server_pid = server.pid().unwrap();
    let server_before = hush_testing::peak_rss_kib(server_pid).unwrap();

    let run = |c: &Client, args: &[&str]| -> u64 {
        let mut child = Command::new(bin("hush"))
            .arg("--home")
            .arg(c.home.path())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut peak = 0;
        loop {
            if let Some(kib) = hush_testing::peak_rss_kib(child.id()) {
                peak = peak.max(kib);
            }
            if let Some(status) = child.try_wait().unwrap() {
                assert!(status.success(), "hush {args:?} failed");
                return peak;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    };
    let sent_peak = run(&v[0], &["file", "send", "ben", path.to_str().unwrap()]);
    v[1].recv(5);
    let id = json_lines(&ok(&v[1].run("", &["files", "--json"])))[0]["file_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let down = tempfile::tempdir().unwrap();
    let got_peak = run(
        &v[1],
        &[
            "file",
            "get",
            &id,
            "--output",
            down.path().to_str().unwrap(),
        ],
    );
    let server_after = hush_testing::peak_rss_kib(server_pid).unwrap();

    let out = down.path().join("large.bin");
    assert_eq!(std::fs::metadata(&out).unwrap().len(), 200 * 1024 * 1024);
    assert!(files_equal(&path, &out), "the downloaded file differs");
    // 200 MiB went through each; a few MiB of buffers are allowed, not the file.
    const MIB: u64 = 1024;
    assert!(sent_peak < 64 * MIB, "sender peak RSS {sent_peak} KiB");
    assert!(got_peak < 64 * MIB, "receiver peak RSS {got_peak} KiB");
    assert!(
        server_after - server_before < 48 * MIB,
        "server peak RSS grew from {server_before} to {server_after} KiB"
    );
}

fn files_equal(a: &Path, b: &Path) -> bool {
    use std::io::Read;
    let (mut fa, mut fb) = (
        std::fs::File::open(a).unwrap(),
        std::fs::File::open(b).unwrap(),
    );
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let na = fa.read(&mut ba).unwrap();
        let mut nb = 0;
        while nb < na {
            let n = fb.read(&mut bb[nb..na]).unwrap();
            if n == 0 {
                return false;
            }
            nb += n;
        }
        if na == 0 {
            return fb.read(&mut bb).unwrap() == 0;
        }
        if ba[..na] != bb[..na] {
            return false;
        }
    }
}

#[test]
fn p562_p564_a_file_goes_when_its_uploader_deletes_it_or_its_time_is_up() {
    let server = Server::with_limits("file_retention_secs = 2\nprune_interval_secs = 1");
    let v = hush_testing::registered(&server, &["ann", "ben", "cat"], PW);
    let work = tempfile::tempdir().unwrap();
    let path = write_file(work.path(), "a.txt", b"first");
    let first = send_file(&v[0], "ben", &path, &[])["file_id"]
        .as_str()
        .unwrap()
        .to_owned();
    v[1].recv(3);
    // Only the uploader's user may withdraw it.
    fails(
        &v[1].run("", &["file", "delete", &first]),
        3,
        "only its uploader",
    );
    let out = ok(&v[0].run("", &["file", "delete", &first]));
    assert!(out.contains("deleted file"), "{out}");
    assert!(blob_files(&server).is_empty());
    fails(&v[1].run("", &["file", "get", &first]), 1, "no such file");

    let second = write_file(work.path(), "b.txt", b"second");
    send_file(&v[0], "cat", &second, &[]);
    assert_eq!(blob_files(&server).len(), 1);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while !blob_files(&server).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "retention did not delete the file"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert!(server.wait_for_log("retention pass deleted files"));
}
