//! Configuration precedence: `berth.toml` < `BERTH_*` environment < command-line flags.

use std::process::Command;

use crate::harness::BERTH;

fn print_config(dir: &std::path::Path, env: &[(&str, &str)], args: &[&str]) -> String {
    let mut cmd = Command::new(BERTH);
    cmd.current_dir(dir)
        .args(["serve", "--print-config"])
        .args(args)
        .env_remove("BERTH_LISTEN")
        .env_remove("BERTH_DATA")
        .env_remove("BERTH_CONFIG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run berth");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn file_then_environment_then_flags() {
    let dir = tempfile::tempdir().unwrap();
    let defaults = print_config(dir.path(), &[], &[]);
    assert!(
        defaults.contains(r#"listen = "127.0.0.1:5000""#),
        "{defaults}"
    );
    assert!(defaults.contains(r#"data = "berth-data""#), "{defaults}");

    std::fs::write(
        dir.path().join("berth.toml"),
        "listen = \"127.0.0.1:6000\"\ndata = \"/srv/from-file\"\nshutdown_grace_secs = 5\n",
    )
    .unwrap();
    let file = print_config(dir.path(), &[], &[]);
    assert!(file.contains(r#"listen = "127.0.0.1:6000""#), "{file}");
    assert!(file.contains(r#"data = "/srv/from-file""#), "{file}");
    assert!(file.contains("shutdown_grace_secs = 5"), "{file}");

    let env = print_config(dir.path(), &[("BERTH_DATA", "/srv/from-env")], &[]);
    assert!(env.contains(r#"data = "/srv/from-env""#), "{env}");
    assert!(env.contains(r#"listen = "127.0.0.1:6000""#), "{env}");

    let flags = print_config(
        dir.path(),
        &[
            ("BERTH_DATA", "/srv/from-env"),
            ("BERTH_LISTEN", "127.0.0.1:7000"),
        ],
        &["--listen", "127.0.0.1:8000"],
    );
    assert!(flags.contains(r#"listen = "127.0.0.1:8000""#), "{flags}");
    assert!(flags.contains(r#"data = "/srv/from-env""#), "{flags}");
}

#[test]
fn bad_configuration_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("berth.toml"), "lisen = \"127.0.0.1:1\"\n").unwrap();
    let out = Command::new(BERTH)
        .current_dir(dir.path())
        .args(["serve", "--print-config"])
        .env_remove("BERTH_CONFIG")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("berth.toml") && err.contains("lisen"), "{err}");

    let out = Command::new(BERTH)
        .current_dir(dir.path())
        .args([
            "serve",
            "--print-config",
            "--config",
            "/dev/null",
            "--listen",
            "nonsense",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not IP:PORT"));
}
