//! `datapunk backup create` beside the bare pipeline it replaces, `pg_dump -Fc | gpg -e`, on
//! the same database in the same run. Prints the times; asserts nothing. The target is to stay
//! within 10% of the bare pipeline.
//!
//! Build the binaries in the same profile first, then run it (as root, like the tests: the
//! database cluster runs as an unprivileged account):
//! `cargo build --release --workspace --bins && cargo bench --bench backup`.

use std::path::Path;
use std::time::{Duration, Instant};

use datapunk_tests::Setup;

/// Rows of incompressible filler: about 64 bytes each.
const ROWS: i64 = 400_000;
const RUNS: usize = 5;

fn main() {
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let setup = Setup::external();
    assert!(setup.init().status.success(), "datapunk db init");
    runtime.block_on(async {
        let admin = setup.admin().await;
        let fill = format!(
            "SET ROLE datapunk_owner;
             CREATE TABLE datapunk.bench_filler AS
                 SELECT g AS id, md5(random()::text) || md5(random()::text) AS filler
                   FROM generate_series(1, {ROWS}) g;"
        );
        admin.batch_execute(&fill).await.expect("the filler");
    });

    let gnupg = setup.path().join("gnupg");
    run_ok(setup.command("mkdir").args(["-m", "700"]).arg(&gnupg));
    run_ok(setup.command("gpg").env("GNUPGHOME", &gnupg).args([
        "--batch",
        "--passphrase",
        "",
        "--quick-gen-key",
        "Datapunk Bench <bench@datapunk.invalid>",
        "default",
        "default",
        "never",
    ]));
    let listing = run_ok(
        setup.command("gpg").env("GNUPGHOME", &gnupg).args(["--list-keys", "--with-colons"]),
    );
    let fingerprint = listing
        .lines()
        .find_map(|line| line.strip_prefix("fpr:"))
        .and_then(|rest| rest.split(':').find(|field| !field.is_empty()))
        .expect("a fingerprint")
        .to_owned();
    let config = std::fs::read_to_string(&setup.config).expect("the configuration");
    setup.write_config(&format!("{config}\n[backup]\nrecipients = [\"{fingerprint}\"]\n"));

    let conninfo = datapunk_testkit::cluster().conninfo("datapunk_backup", &setup.db_name);
    let out = setup.path().join("bare");
    run_ok(setup.command("mkdir").args(["-m", "700"]).arg(&out));
    let bare = format!(
        "set -o pipefail; pg_dump -Fc --no-password --exclude-table=datapunk.vault_records \
         --dbname='{conninfo}' | gpg --batch --trust-model always -e -r {fingerprint} \
         -o \"$0/dump-$1.gpg\""
    );

    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    for run in 0..RUNS {
        let start = Instant::now();
        run_ok(setup.command("datapunk").env("GNUPGHOME", &gnupg).args(["backup", "create"]));
        ours.push(start.elapsed());

        let start = Instant::now();
        run_ok(
            setup
                .command("bash")
                .env("GNUPGHOME", &gnupg)
                .args(["-c", &bare])
                .arg(&out)
                .arg(run.to_string()),
        );
        theirs.push(start.elapsed());
    }

    let size = |dir: &Path| -> u64 {
        std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .flatten()
                    .filter(|e| e.file_name().to_string_lossy().contains("dump"))
                    .filter_map(|e| e.metadata().ok())
                    .map(|m| m.len())
                    .max()
                    .unwrap_or(0)
            })
            .unwrap_or(0)
    };
    let (ours_median, theirs_median) = (median(&mut ours), median(&mut theirs));
    println!("database: {ROWS} filler rows plus the schema; {RUNS} runs each, median");
    println!(
        "datapunk backup create       {:>8.1} ms  ({} bytes)",
        ours_median.as_secs_f64() * 1e3,
        size(&setup.state_dir().join("backups"))
    );
    println!(
        "pg_dump -Fc | gpg -e (bare)  {:>8.1} ms  ({} bytes)",
        theirs_median.as_secs_f64() * 1e3,
        size(&out)
    );
    println!(
        "ratio                        {:>8.2}",
        ours_median.as_secs_f64() / theirs_median.as_secs_f64()
    );
}

fn median(times: &mut [Duration]) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn run_ok(command: &mut std::process::Command) -> String {
    let output = command.output().expect("run a program");
    assert!(output.status.success(), "{command:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}
