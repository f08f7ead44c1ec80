//! The Debian package (O1). `scripts/package` builds it with cargo-deb from the release binary; this test
//! packages the binary the tests themselves run (`--profile dev --no-build`: no second build inside
//! `cargo test`) and checks what an operator would install: the files and their modes, the conffiles,
//! the maintainer scripts (the system user), that the shipped config passes `check-config`, and that
//! `systemd-analyze verify` accepts the unit, which runs sandboxed as that user with its secrets from
//! the environment file.

use std::path::Path;
use std::process::Command;

fn run(program: &str, args: &[&str], dir: &Path) -> String {
    let output = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("run {program}: {e}"));
    assert!(
        output.status.success(),
        "{program} {args:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn the_package_installs_the_binary_a_sandboxed_unit_and_a_config_that_checks() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = std::env::temp_dir()
        .join("ari-transfer-tests")
        .join("package");
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).unwrap();
    let out_arg = format!("{}/", out.display());
    let args = ["--profile", "dev", "--no-build", "-o", out_arg.as_str()];
    run("scripts/package", &args, repo);
    let deb = std::fs::read_dir(&out)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .expect("a .deb");
    let deb = deb.to_str().unwrap();

    // The files, with the modes that matter: the secrets' file is not world-readable.
    let contents = run("dpkg-deb", &["--contents", deb], repo);
    for (mode, path) in [
        ("-rwxr-xr-x", "./usr/bin/ari-transfer"),
        (
            "-rw-r--r--",
            "./usr/lib/systemd/system/ari-transfer.service",
        ),
        ("-rw-r--r--", "./etc/ari-transfer/ari-transfer.toml"),
        ("-rw-r-----", "./etc/ari-transfer/environment"),
        ("-rw-r--r--", "./usr/share/doc/ari-transfer/README.md"),
    ] {
        assert!(
            contents
                .lines()
                .any(|l| l.starts_with(mode) && l.ends_with(path)),
            "no {mode} {path} in:\n{contents}"
        );
    }
    let info = run("dpkg-deb", &["--info", deb], repo);
    assert!(info.contains("Depends: adduser"), "{info}");
    let package = run("dpkg-deb", &["--field", deb, "Package"], repo);
    assert_eq!(package.trim(), "ari-transfer");

    // Unpacked: the control files and the tree.
    let control = out.join("control");
    let tree = out.join("tree");
    run(
        "dpkg-deb",
        &["--control", deb, control.to_str().unwrap()],
        repo,
    );
    run(
        "dpkg-deb",
        &["--extract", deb, tree.to_str().unwrap()],
        repo,
    );
    let conffiles = std::fs::read_to_string(control.join("conffiles")).unwrap();
    assert_eq!(
        conffiles.lines().collect::<Vec<_>>(),
        [
            "/etc/ari-transfer/ari-transfer.toml",
            "/etc/ari-transfer/environment"
        ]
    );
    let postinst = std::fs::read_to_string(control.join("postinst")).unwrap();
    assert!(
        postinst.contains("adduser --system --group"),
        "the system user: {postinst}"
    );
    // Enabled by the operator once the secrets are in (not at install).
    assert!(!postinst.contains("systemctl start"), "{postinst}");

    // The shipped binary accepts the shipped config.
    let binary = tree.join("usr/bin/ari-transfer");
    let config = tree.join("etc/ari-transfer/ari-transfer.toml");
    let checked = run(
        binary.to_str().unwrap(),
        &["check-config", config.to_str().unwrap()],
        repo,
    );
    assert!(checked.contains(": ok ("), "{checked}");

    // The unit: sandboxed, as its own user, secrets from the environment file, restarted on failure.
    let unit =
        std::fs::read_to_string(tree.join("usr/lib/systemd/system/ari-transfer.service")).unwrap();
    for line in [
        "User=ari-transfer",
        "EnvironmentFile=/etc/ari-transfer/environment",
        "ExecStart=/usr/bin/ari-transfer run --config /etc/ari-transfer/ari-transfer.toml",
        "Restart=on-failure",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "CapabilityBoundingSet=",
    ] {
        assert!(
            unit.lines().any(|l| l.starts_with(line)),
            "no {line} in the unit"
        );
    }
    // systemd-analyze verify checks the unit as systemd would load it, the binary it starts included:
    // pointed at the unpacked tree, since the package is not installed here.
    let root = tree.to_str().unwrap();
    let unpacked = unit
        .replace("/usr/bin/", &format!("{root}/usr/bin/"))
        .replace("/etc/ari-transfer/", &format!("{root}/etc/ari-transfer/"));
    let verify_dir = out.join("verify");
    std::fs::create_dir_all(&verify_dir).unwrap();
    let path = verify_dir.join("ari-transfer.service");
    std::fs::write(&path, unpacked).unwrap();
    run("systemd-analyze", &["verify", path.to_str().unwrap()], repo);
}
