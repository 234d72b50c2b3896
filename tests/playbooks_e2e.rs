//! End-to-end tests of the host-level playbooks with the real kfix binary against real
//! lab hosts (network + mount + UTS namespaces running sshd; for the docker playbooks F5
//! and F11, systemd hosts running Debian's dockerd as a systemd service).
//!
//! For every playbook, on a host with the fault injected: `check` detects it and not on a
//! healthy host; `--dry-run` shows the change and leaves the host unchanged (snapshot);
//! apply makes the predicted change and verify passes; a second run has nothing to do;
//! a forced verify failure rolls back to the exact snapshot; a host failing a
//! precondition is skipped and untouched.

mod common;

use common::playbook::{
    assert_same, check_status, kfix_json, lifecycle, lifecycle_of, out_json, skipped, status,
};
use common::{Etcd, Lab, host, require_root};

#[test]
fn f3_persist_ip_forward() {
    if !require_root() {
        return;
    }
    let lab = Lab::up(3);
    // Faulty: off at runtime, and sysctl.conf (read through Debian's 99-sysctl.conf
    // symlink) turns it off again; a drop-in sets it on but sorts earlier.
    for h in ["h1", "h3"] {
        lab.sh(h, "sysctl -qw net.ipv4.ip_forward=0");
        lab.write_file(
            h,
            "/etc/sysctl.conf",
            "# local settings\nnet.ipv4.ip_forward = 0\nnet.ipv4.tcp_syncookies=1\n",
        );
        lab.write_file(h, "/etc/sysctl.d/30-k8s.conf", "net.ipv4.ip_forward=1\n");
    }
    lab.sh("h2", "sysctl -qw net.ipv4.ip_forward=1");
    lab.write_file("h2", "/etc/sysctl.conf", "net.ipv4.ip_forward = 1\n");
    lifecycle(&lab, "persist-ip-forward", &[], |lab, h| {
        assert_eq!(lab.sh(h, "cat /proc/sys/net/ipv4/ip_forward").trim(), "1");
        assert_eq!(
            lab.sh(h, "cat /etc/sysctl.conf"),
            "# local settings\nnet.ipv4.ip_forward = 1\nnet.ipv4.tcp_syncookies=1\n"
        );
        assert!(
            lab.sh(
                h,
                "test -L /etc/sysctl.d/99-sysctl.conf && readlink /etc/sysctl.d/99-sysctl.conf"
            )
            .trim()
                == "../sysctl.conf",
            "symlink kept"
        );
        assert_eq!(
            lab.sh(h, "ls -A /etc/sysctl.d"),
            "30-k8s.conf\n99-sysctl.conf\nREADME.sysctl\n",
            "no backups or temp files left in sysctl.d"
        );
    });
}

/// A calico-node stand-in: a systemd service whose process is named calico-node (a
/// copy of sleep), with systemd's default limits (soft nofile 1024: the report's) unless
/// `limit` gives the unit its own.
fn calico_node_unit(lab: &Lab, h: &str, limit: Option<&str>) {
    let extra = limit.map_or(String::new(), |l| format!("LimitNOFILE={l}\n"));
    lab.write_file(
        h,
        "/etc/systemd/system/calico-node.service",
        &format!("[Unit]\nDescription=calico-node stand-in (kfix lab)\n[Service]\nExecStart=/usr/local/bin/calico-node infinity\n{extra}[Install]\nWantedBy=multi-user.target\n"),
    );
    lab.sh(
        h,
        "cp /bin/sleep /usr/local/bin/calico-node && systemctl daemon-reload && systemctl start calico-node.service",
    );
}

/// calico-node's open-files limit, as its /proc/PID/limits says (soft hard).
fn calico_nofile(lab: &Lab, h: &str) -> String {
    lab.sh(
        h,
        "awk '/^Max open files/ {print $4, $5}' /proc/$(pgrep -o -x calico-node)/limits",
    )
    .trim()
    .to_string()
}

/// CentOS 7's /etc/security/limits.d/20-nproc.conf, byte for byte.
const CENTOS_20_NPROC: &str = "# Default limit for number of user's processes to prevent\n# accidental fork bombs.\n# See rhbz #432903 for reasoning.\n\n*          soft    nproc     4096\nroot       soft    nproc     unlimited\n";

/// F4 on systemd hosts: the fault is systemd's own default (soft nofile 1024 for a
/// service). h1: stock files; h2 (healthy twin): its unit has a higher limit and its
/// limits.conf higher values; h3: a site's higher hard limit in limits.conf (kept) and a
/// low root line; h4: no calico-node.
#[test]
fn f4_raise_nofile_limits() {
    if !require_root() {
        return;
    }
    let lab = Lab::up_with_systemd(4, &["h1", "h2", "h3", "h4"]);
    for h in ["h1", "h3"] {
        calico_node_unit(&lab, h, None);
        lab.write_file(h, "/etc/security/limits.d/20-nproc.conf", CENTOS_20_NPROC);
    }
    // systemd's default: soft 1024, hard its DefaultLimitNOFILE (524288, or what the
    // machine lets it have: the lab's hosts cannot go above the hard limit of the
    // shell that started them).
    let limits = calico_nofile(&lab, "h1");
    let hard: u64 = limits
        .strip_prefix("1024 ")
        .and_then(|h| h.parse().ok())
        .unwrap_or_else(|| panic!("not systemd's default: {limits}"));
    // What calico-node needs: the report's 102400 where the machine allows it.
    let nofile = hard.min(102_400);
    let nofile_var = format!("nofile={nofile}");
    let vars = ["-e", nofile_var.as_str()];
    lab.write_file(
        "h3",
        "/etc/security/limits.conf",
        "# /etc/security/limits.conf\n#<domain> <type> <item> <value>\n*               soft    core            0\n* hard nofile 1048576\nroot soft nofile 1024\n# End of file\n",
    );
    // The healthy twin: its unit has the highest limit the machine allows, its
    // limits.conf says more than calico-node needs.
    calico_node_unit(&lab, "h2", Some(&hard.to_string()));
    lab.write_file(
        "h2",
        "/etc/security/limits.conf",
        "root soft nofile 1048576\nroot hard nofile 1048576\n* soft nofile 1048576\n* hard nofile 1048576\n* soft nproc unlimited\n* hard nproc unlimited\n",
    );
    let doc = kfix_json(&lab, "check", "raise-nofile-limits", &vars);
    assert!(
        host(&doc["checks"][0], "h1")["reason"]
            .as_str()
            .unwrap_or("")
            .contains(&format!(
                "Max open files 1024 (hard {hard}), below {nofile}"
            )),
        "{doc:#}"
    );
    // The unit's drop-in never lowers the hard limit systemd gives the unit (524288 by
    // its default, whatever the machine then lets the process have).
    let configured: u64 = lab
        .sh(
            "h1",
            "systemctl show -p LimitNOFILE --value calico-node.service",
        )
        .trim()
        .parse()
        .expect("a number");
    let dropin = configured.max(nofile);
    let raised = hard.max(nofile);
    lifecycle(&lab, "raise-nofile-limits", &vars, |lab, h| {
        assert_eq!(calico_nofile(lab, h), format!("{raised} {raised}"));
        assert_eq!(
            lab.sh(
                h,
                "cat /etc/systemd/system/calico-node.service.d/kfix-nofile.conf"
            ),
            format!(
                "# Written by kfix (raise-nofile-limits): pam_limits does not reach services.\n[Service]\nLimitNOFILE={dropin}\n"
            )
        );
        assert_eq!(
            lab.sh(h, "cat /etc/security/limits.d/20-nproc.conf"),
            CENTOS_20_NPROC.replace("soft    nproc     4096", "soft    nproc     8192"),
            "raised in place; root's unlimited kept"
        );
    });
    // h3 was rolled back by the forced failure: its files and unit are as before, and
    // its calico-node keeps the limit the run's restart gave it until it restarts again.
    assert_eq!(calico_nofile(&lab, "h3"), format!("{raised} {raised}"));
    lab.sh("h3", "systemctl restart calico-node.service");
    assert_eq!(calico_nofile(&lab, "h3"), format!("1024 {hard}"));
    // For real there: the site's higher hard limit stays.
    let mut args = vars.to_vec();
    args.extend(["--yes", "--limit", "h3"]);
    let doc = kfix_json(&lab, "run", "raise-nofile-limits", &args);
    assert_eq!(status(&doc, "h3"), "changed", "{doc:#}");
    let conf = lab.sh("h3", "cat /etc/security/limits.conf");
    assert!(conf.contains("* hard nofile 1048576\n"), "{conf}");
    assert!(
        conf.contains(&format!("root soft nofile {nofile}\n")),
        "{conf}"
    );
    assert!(
        !conf.contains(&format!("* hard nofile {nofile}")),
        "never lowered: {conf}"
    );
    assert_eq!(calico_nofile(&lab, "h3"), format!("{raised} {raised}"));
    // The healthy twin: no change anywhere, though its files say more than it needs.
    let before = lab.snapshot("h2");
    let mut args = vars.to_vec();
    args.extend(["--yes", "--limit", "h2"]);
    let doc = kfix_json(&lab, "run", "raise-nofile-limits", &args);
    assert_eq!(status(&doc, "h2"), "healthy", "{doc:#}");
    assert_same(&lab.snapshot("h2"), &before, "the healthy twin was changed");
    skipped(&lab, "raise-nofile-limits", "h4", &vars);
}

/// Files dockerd rewrites every time it starts (its bolt databases): a rollback that
/// restarts docker leaves them changed, everything else under /var/lib/docker is restored.
const DOCKERD_START_WRITES: &[&str] = &[
    "/var/lib/docker/buildkit/cache.db",
    "/var/lib/docker/network/files/local-kv.db",
    "/var/lib/docker/volumes/metadata.db",
];

/// Starts Debian's docker.io (a systemd service on a systemd lab host) with the config
/// already written, and gives it data: an image imported offline (no registry here).
fn start_docker_with_an_image(lab: &Lab, h: &str) {
    lab.sh(
        h,
        "systemctl enable --now docker.service 2>/dev/null && docker info >/dev/null && \
         mkdir -p /tmp/img && echo old > /tmp/img/marker && \
         tar -C /tmp/img -c . | docker import - kfix-lab/old-image:1 >/dev/null",
    );
}

/// `docker info`'s storage driver.
fn storage_driver(lab: &Lab, h: &str) -> String {
    lab.sh(h, "docker info --format '{{.Driver}}'")
        .trim()
        .to_string()
}

fn docker_images(lab: &Lab, h: &str) -> String {
    lab.sh(h, "docker images --format '{{.Repository}}:{{.Tag}}'")
}

/// A kubelet stand-in: a systemd unit named kubelet that only sleeps.
fn kubelet_unit(lab: &Lab, h: &str) {
    lab.write_file(
        h,
        "/etc/systemd/system/kubelet.service",
        "[Unit]\nDescription=kubelet stand-in (kfix lab)\n[Service]\nExecStart=/bin/sleep infinity\n[Install]\nWantedBy=multi-user.target\n",
    );
    lab.sh(
        h,
        "systemctl daemon-reload && systemctl enable --now kubelet 2>/dev/null",
    );
}

/// `docker info` of report 002's era on devicemapper (docker 1.12.6 on CentOS 7, as
/// moby#33553 printed it; shortened after the driver's block), for a `docker` that only
/// answers `info`: the driver cannot run in the lab.
const DOCKER_1126_DEVICEMAPPER: &str = "Containers: 14\n Running: 0\n Paused: 0\n Stopped: 14\nImages: 29\nServer Version: 1.12.6\nStorage Driver: devicemapper\n Pool Name: docker-253:1-33561753-pool\n Pool Blocksize: 65.54 kB\n Base Device Size: 10.74 GB\n Backing Filesystem: xfs\n Data file: /dev/loop0\n Metadata file: /dev/loop1\nLogging Driver: json-file\nCgroup Driver: systemd\nKernel Version: 3.10.0-229.el7.x86_64\nOperating System: CentOS Linux 7 (Core)\n";

/// A `docker` command that prints `info` and a version (docker itself does not run).
fn docker_cli(lab: &Lab, h: &str, info: &str) {
    lab.write_file(h, "/usr/local/share/docker-info", info);
    lab.write_file(
        h,
        "/usr/local/bin/docker",
        "#!/bin/sh\ncase $1 in --version) echo 'Docker version 1.12.6, build 78d1802' ;; info) cat /usr/local/share/docker-info ;; *) exit 1 ;; esac\n",
    );
    lab.sh(h, "chmod 755 /usr/local/bin/docker");
}

/// F5 against Debian's real dockerd (docker.io) on systemd lab hosts. devicemapper does
/// not run here, so the hosts' docker runs on vfs and the runs say `from_driver=vfs`;
/// the devicemapper leftovers the fix must clear (dm.* options) are written into the
/// configuration after docker started (overlay2 refuses to start with them, so the
/// fixed docker starting proves they are gone). h1: daemon.json with other keys and
/// dm.* storage-opts, a kubelet unit; h2: already overlay2; h3: CentOS's
/// /etc/sysconfig/docker-storage, read by docker's unit (as CentOS's is); h4: DOCKER_OPTS
/// single-quoted with a dm.* flag; h5: the driver set by a flag in docker's unit
/// (skipped: not edited); h6 (light): docker on btrfs, a deliberate choice; h7 (light):
/// report 002's era, docker 1.12.6 on devicemapper (detection).
#[test]
fn f5_docker_overlay2() {
    if !require_root() {
        return;
    }
    let lab = Lab::up_with_systemd(7, &["h1", "h2", "h3", "h4", "h5"]);
    lab.write_file(
        "h1",
        "/etc/docker/daemon.json",
        "{\n  \"log-driver\": \"json-file\",\n  \"log-opts\": {\"max-size\": \"100m\"},\n  \"storage-driver\": \"vfs\"\n}\n",
    );
    lab.write_file(
        "h2",
        "/etc/docker/daemon.json",
        "{\"storage-driver\": \"overlay2\"}\n",
    );
    // CentOS's docker.service reads DOCKER_STORAGE_OPTIONS from this file.
    lab.write_file(
        "h3",
        "/etc/systemd/system/docker.service.d/centos-storage.conf",
        "[Service]\nEnvironmentFile=-/etc/sysconfig/docker-storage\nExecStart=\nExecStart=/usr/sbin/dockerd -H fd:// $DOCKER_STORAGE_OPTIONS\n",
    );
    lab.write_file(
        "h3",
        "/etc/sysconfig/docker-storage",
        "DOCKER_STORAGE_OPTIONS=\"--storage-driver vfs\"\n",
    );
    lab.write_file(
        "h4",
        "/etc/default/docker",
        "# Docker Upstart and SysVinit configuration file\nDOCKER_OPTS='--dns 8.8.8.8 -s vfs'\n",
    );
    lab.write_file(
        "h5",
        "/etc/systemd/system/docker.service.d/driver.conf",
        "[Service]\nExecStart=\nExecStart=/usr/sbin/dockerd -H fd:// --storage-driver=vfs\n",
    );
    kubelet_unit(&lab, "h1");
    for h in ["h1", "h2", "h3", "h4", "h5"] {
        lab.sh(h, "systemctl daemon-reload");
        start_docker_with_an_image(&lab, h);
    }
    // devicemapper's leftovers, as docker-storage-setup and hand configuration leave them.
    lab.write_file(
        "h1",
        "/etc/docker/daemon.json",
        "{\n  \"log-driver\": \"json-file\",\n  \"log-opts\": {\"max-size\": \"100m\"},\n  \"storage-driver\": \"vfs\",\n  \"storage-opts\": [\"dm.basesize=20G\", \"dm.thinpooldev=/dev/mapper/docker-thinpool\"]\n}\n",
    );
    lab.write_file("h4", "/etc/default/docker", "# Docker Upstart and SysVinit configuration file\nDOCKER_OPTS='--dns 8.8.8.8 -s vfs --storage-opt dm.basesize=20G'\n");
    docker_cli(&lab, "h6", &DOCKER_1126_DEVICEMAPPER.replace("devicemapper\n Pool Name: docker-253:1-33561753-pool\n Pool Blocksize: 65.54 kB\n Base Device Size: 10.74 GB\n Backing Filesystem: xfs\n Data file: /dev/loop0\n Metadata file: /dev/loop1\n", "btrfs\n Build Version: Btrfs v4.4\n Library Version: 101\n"));
    docker_cli(&lab, "h7", DOCKER_1126_DEVICEMAPPER);
    for h in ["h1", "h3", "h4", "h5"] {
        assert_eq!(storage_driver(&lab, h), "vfs");
    }
    assert_eq!(storage_driver(&lab, "h2"), "overlay2");
    let kubelet_pid = lab.sh("h1", "systemctl show -p MainPID --value kubelet");
    // What the report's docker says is found as such; btrfs is left alone.
    let doc = kfix_json(&lab, "check", "docker-overlay2", &["--limit", "h6:h7"]);
    assert_eq!(check_status(&doc, "h6"), "healthy", "{doc:#}");
    assert_eq!(check_status(&doc, "h7"), "problem", "{doc:#}");
    assert!(
        host(&doc["checks"][0], "h7")["reason"]
            .as_str()
            .unwrap_or("")
            .contains("Storage Driver: devicemapper"),
        "{doc:#}"
    );
    let vfs = ["-e", "from_driver=vfs"];
    // The data root moved aside is named with its size and how to free it.
    let dry = kfix_json(
        &lab,
        "run",
        "docker-overlay2",
        &["-e", "from_driver=vfs", "--dry-run", "--limit", "h1"],
    );
    let moved = host(&dry, "h1")["steps"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["id"] == "move-data-root").cloned())
        .unwrap_or_default();
    assert!(
        moved["note"].as_str().is_some_and(
            |n| n.contains("/var/lib/docker (") && n.contains("`rm -rf /var/lib/docker.kfix-")
        ),
        "{dry:#}"
    );
    lifecycle_of(
        &lab,
        "docker-overlay2",
        &vfs,
        true,
        DOCKERD_START_WRITES,
        |lab, h| {
            assert_eq!(storage_driver(lab, h), "overlay2");
            assert_eq!(
                lab.sh(h, "cat /etc/docker/daemon.json"),
                "{\n  \"log-driver\": \"json-file\",\n  \"log-opts\": {\n    \"max-size\": \"100m\"\n  },\n  \"storage-driver\": \"overlay2\"\n}\n",
                "dm.* storage-opts gone, every other key kept"
            );
            assert_eq!(docker_images(lab, h), "", "a fresh overlay2 data root");
            assert!(
                lab.sh(h, "cat /var/lib/docker.kfix-*/image/vfs/repositories.json")
                    .contains("kfix-lab/old-image"),
                "old data root kept aside"
            );
            assert_eq!(
                lab.sh(h, "systemctl is-active kubelet docker.socket"),
                "active\nactive\n"
            );
            assert_ne!(
                lab.sh(h, "systemctl show -p MainPID --value kubelet"),
                kubelet_pid,
                "kubelet was stopped and started again"
            );
        },
    );
    // The forced verify failure on h3 was rolled back: old driver, old data.
    assert_eq!(storage_driver(&lab, "h3"), "vfs");
    assert_eq!(docker_images(&lab, "h3"), "kfix-lab/old-image:1\n");
    // h3 for real, then `kfix rollback` of that run: docker re-created its data root
    // when it started, which the undo sets aside (not drift); the old configuration,
    // driver and image come back.
    let mut args = vfs.to_vec();
    args.extend(["--yes", "--limit", "h3"]);
    let run = kfix_json(&lab, "run", "docker-overlay2", &args);
    assert_eq!(status(&run, "h3"), "changed", "{run:#}");
    assert_eq!(
        lab.sh("h3", "cat /etc/sysconfig/docker-storage"),
        "DOCKER_STORAGE_OPTIONS=\"--storage-driver overlay2\"\n"
    );
    assert_eq!(storage_driver(&lab, "h3"), "overlay2");
    let id = run["run_id"].as_str().unwrap();
    let rb = out_json(&lab.kfix(&["rollback", id, "--yes", "--output", "json"]));
    assert_eq!(rb["hosts"][0]["status"], "rolled_back", "{rb:#}");
    assert_eq!(storage_driver(&lab, "h3"), "vfs");
    assert_eq!(docker_images(&lab, "h3"), "kfix-lab/old-image:1\n");
    // devicemapper's options in docker-storage (docker-storage-setup's shape) and in a
    // single-quoted DOCKER_OPTS: gone, the other flags kept, no daemon.json beside them.
    lab.write_file(
        "h3",
        "/etc/sysconfig/docker-storage",
        "DOCKER_STORAGE_OPTIONS=\"--storage-driver vfs --storage-opt dm.fs=xfs --storage-opt dm.thinpooldev=/dev/mapper/docker--vg-docker--pool --storage-opt dm.use_deferred_removal=true\"\n",
    );
    let mut args = vfs.to_vec();
    args.extend(["--yes", "--limit", "h3:h4"]);
    let run = kfix_json(&lab, "run", "docker-overlay2", &args);
    for h in ["h3", "h4"] {
        assert_eq!(status(&run, h), "changed", "{run:#}");
        assert!(
            lab.exec(h, "test -e /etc/docker/daemon.json").status.code() != Some(0),
            "no daemon.json beside the flags"
        );
        assert_eq!(storage_driver(&lab, h), "overlay2");
        assert_eq!(docker_images(&lab, h), "");
    }
    assert_eq!(
        lab.sh("h3", "cat /etc/sysconfig/docker-storage"),
        "DOCKER_STORAGE_OPTIONS=\"--storage-driver overlay2\"\n"
    );
    assert_eq!(
        lab.sh("h4", "cat /etc/default/docker"),
        "# Docker Upstart and SysVinit configuration file\nDOCKER_OPTS='--dns 8.8.8.8 -s overlay2'\n"
    );
    // h5: the driver is a flag in docker's unit: skipped, not edited.
    skipped(&lab, "docker-overlay2", "h5", &vfs);
}

/// The kernel log of report 002, byte for byte (its node's hostname left as the
/// report printed it).
const SLUB_LOG: &str = "Jun  8 03:03:28 [node hostname] kernel: [88820.247535] SLUB: Unable to allocate memory on node -1 (gfp=0x8020)
Jun  8 03:03:28 [node hostname] kernel: [88820.247541]   cache: kmalloc-192(33:b40c3884668600191e02b3c32efaf12bdd1e6d0a4d3869662045e4193af6c26c), object size: 192, buffer size: 192, default order: 0, min order: 0
Jun  8 03:03:28 [node hostname] kernel: [88820.247543]   node 0: slabs: 202, objs: 4242, free: 0
";

/// F14 is detection only: `check` finds it and names the remedy; `run` refuses it.
/// Each host's own mount namespace shows another kernel release: h1 the report's
/// Ubuntu 14.04 (3.13), h2 4.2 (which the report found unreliable too), h3 4.9 (where
/// it had no recurrence) with the leak's lines in its kern.log, h4 4.9 and a clean
/// log; h5 has no docker.
#[test]
fn f14_kernel_cgroup_leak_is_detection_only() {
    if !require_root() {
        return;
    }
    let lab = Lab::up(5);
    let release = [
        ("h1", "3.13.0-143-generic"),
        ("h2", "4.2.0-42-generic"),
        ("h3", "4.9.0-8-amd64"),
        ("h4", "4.9.0-8-amd64"),
    ];
    for (h, r) in release {
        lab.write_file(
            h,
            "/usr/local/bin/docker",
            "#!/bin/sh\necho 'Docker version 1.12.6, build 78d1802'\n",
        );
        lab.sh(
            h,
            &format!("chmod 755 /usr/local/bin/docker && echo {r} > /run/osrelease && mount --bind /run/osrelease /proc/sys/kernel/osrelease"),
        );
    }
    lab.write_file("h3", "/var/log/kern.log", SLUB_LOG);
    let doc = kfix_json(&lab, "check", "kernel-cgroup-leak", &[]);
    for (h, want) in [
        ("h1", "problem"),
        ("h2", "problem"),
        ("h3", "problem"),
        ("h4", "healthy"),
        ("h5", "skipped"),
    ] {
        assert_eq!(check_status(&doc, h), want, "{h}: {doc:#}");
    }
    let reason = |h: &str| {
        host(&doc["checks"][0], h)["reason"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    assert!(reason("h1").contains("`3.13.0-143-generic`"), "{doc:#}");
    assert!(
        reason("h1").contains("remedy: Drain the node and upgrade its kernel to 4.9"),
        "{doc:#}"
    );
    assert!(reason("h2").contains("`4.2.0-42-generic`"), "{doc:#}");
    assert!(
        reason("h3")
            .contains("[88820.247535] SLUB: Unable to allocate memory on node -1 (gfp=0x8020)"),
        "the log line is the evidence: {doc:#}"
    );
    let out = lab.kfix(&[
        "run",
        "kernel-cgroup-leak",
        "-i",
        lab.inventory().to_str().unwrap(),
        "--ssh-config",
        lab.ssh_config().to_str().unwrap(),
        "--yes",
    ]);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("detection only"));
}

const KUBE_PROXY: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: kube-proxy\n  namespace: kube-system\nspec:\n  hostNetwork: true\n  containers:\n  - name: kube-proxy\n    image: registry.k8s.io/kube-proxy:v1.28.2\n    command: [kube-proxy, --config=/var/lib/kube-proxy/config.conf]\n";

#[test]
fn f8_kube_proxy_eviction() {
    if !require_root() {
        return;
    }
    let lab = Lab::up(4);
    let m = "/etc/kubernetes/manifests/kube-proxy.yaml";
    lab.write_file("h1", m, KUBE_PROXY);
    lab.write_file(
        "h2",
        m,
        &KUBE_PROXY.replace(
            "spec:\n",
            "spec:\n  priorityClassName: system-node-critical\n",
        ),
    );
    lab.write_file(
        "h3",
        m,
        &KUBE_PROXY.replace("spec:\n", "spec:\n  priorityClassName: low-priority\n"),
    );
    lifecycle(&lab, "kube-proxy-eviction", &[], |lab, h| {
        assert_eq!(
            lab.sh(h, &format!("cat {m}")),
            KUBE_PROXY.replace(
                "spec:\n",
                "spec:\n  priorityClassName: system-node-critical\n"
            )
        );
    });
    // h3 had another priority class: it is replaced, not duplicated.
    let run = kfix_json(
        &lab,
        "run",
        "kube-proxy-eviction",
        &["--yes", "--limit", "h3"],
    );
    assert_eq!(status(&run, "h3"), "changed", "{run:#}");
    assert_eq!(
        lab.sh("h3", &format!("grep -c priorityClassName {m}"))
            .trim(),
        "1"
    );
    skipped(&lab, "kube-proxy-eviction", "h4", &[]);
}

/// F10 against a real etcd (3.4, with the v2 API): flannel of report 001's era keeps its
/// leases in the v2 keyspace, named by the subnet's network, in flannel's own format
/// (subnet/config.go's LeaseAttrs). h1 and h3 hold a lease with a retired machine's
/// VtepMAC (h3's subnet is a /25 that does not start at .0); h2's lease is its own;
/// h4 runs no flannel. The same on the v3 API, where a site's flannel keeps them there.
#[test]
fn f10_stale_flannel_subnet_lease_against_a_real_etcd() {
    if !require_root() {
        return;
    }
    let lab = Lab::up(4);
    let etcd = Etcd::start(&lab);
    let lease = |mac: &str, ip: &str| {
        format!(
            "{{\"PublicIP\":\"{ip}\",\"BackendType\":\"vxlan\",\"BackendData\":{{\"VtepMAC\":\"{mac}\"}}}}"
        )
    };
    let subnets = [
        ("h1", "10.100.41.1/24", "10.100.41.0-24"),
        ("h2", "10.100.42.1/24", "10.100.42.0-24"),
        ("h3", "10.100.43.129/25", "10.100.43.128-25"),
    ];
    for (i, (h, sub, _)) in subnets.iter().enumerate() {
        lab.sh(h, &format!("ip link add flannel.1 type bridge && ip link set flannel.1 address 0a:00:00:00:00:0{} && ip link set flannel.1 up", i + 1));
        lab.write_file(
            h,
            "/run/flannel/subnet.env",
            &format!("FLANNEL_NETWORK=10.100.0.0/16\nFLANNEL_SUBNET={sub}\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n"),
        );
    }
    let key = |name: &str| format!("/coreos.com/network/subnets/{name}");
    let v2_set = |k: &str, v: &str| {
        let out = etcd.v2(&["set", k, v]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let v2_get = |k: &str| String::from_utf8_lossy(&etcd.v2(&["get", k]).stdout).into_owned();
    let stale = |h: &str| lease(&format!("0a:00:00:00:99:{}", &h[1..]), &lab.ip(h));
    v2_set(&key(subnets[0].2), &stale("h1"));
    v2_set(
        &key(subnets[1].2),
        &lease("0a:00:00:00:00:02", &lab.ip("h2")),
    );
    v2_set(&key(subnets[2].2), &stale("h3"));
    let h3_lease = v2_get(&key(subnets[2].2));
    let e = format!("etcd_endpoints={}", etcd.url);
    let doc = kfix_json(&lab, "check", "stale-flannel-subnet-lease", &["-e", &e]);
    assert!(
        host(&doc["checks"][0], "h3")["reason"]
            .as_str()
            .unwrap_or("")
            .contains("/coreos.com/network/subnets/10.100.43.128-25"),
        "the lease named by the subnet's network: {doc:#}"
    );
    lifecycle_of(
        &lab,
        "stale-flannel-subnet-lease",
        &["-e", &e],
        false,
        &[],
        |_, _| {
            assert!(
                v2_get(&key(subnets[0].2)).is_empty(),
                "the stale lease is gone"
            );
        },
    );
    assert_eq!(
        v2_get(&key(subnets[1].2)),
        lease("0a:00:00:00:00:02", &lab.ip("h2")) + "\n",
        "a healthy node's lease is untouched"
    );
    assert_eq!(
        v2_get(&key(subnets[2].2)),
        h3_lease,
        "rollback wrote the deleted lease back"
    );
    // The v3 keyspace, where a site's flannel uses it (`-e etcd_api=3`).
    etcd.put(&key(subnets[2].2), &stale("h3"));
    let api3 = ["-e", e.as_str(), "-e", "etcd_api=3"];
    let doc = kfix_json(&lab, "check", "stale-flannel-subnet-lease", &api3);
    assert_eq!(check_status(&doc, "h3"), "problem", "{doc:#}");
    let mut args = api3.to_vec();
    args.extend(["--yes", "--limit", "h3"]);
    let run = kfix_json(&lab, "run", "stale-flannel-subnet-lease", &args);
    assert_eq!(status(&run, "h3"), "changed", "{run:#}");
    assert_eq!(
        etcd.get(&key(subnets[2].2)),
        "",
        "gone from the v3 keyspace"
    );
    assert!(
        !v2_get(&key(subnets[2].2)).is_empty(),
        "the v2 keyspace is another one"
    );
    skipped(&lab, "stale-flannel-subnet-lease", "h4", &["-e", &e]);
}

/// F13: the real `apt-get install` from the lab's offline repository (tests/lab/rootfs.sh);
/// rollback purges exactly what the install added (the snapshot lists dpkg's packages).
#[test]
fn f13_iscsi_initiator() {
    if !require_root() {
        return;
    }
    let lab = Lab::up(4);
    for h in ["h1", "h2", "h3"] {
        lab.sh(h, "mkdir -p /var/lib/kubelet");
    }
    // h2 is healthy: the initiator was installed the usual way.
    lab.sh(
        "h2",
        "DEBIAN_FRONTEND=noninteractive apt-get install -qq -y --no-install-recommends open-iscsi >/dev/null",
    );
    // Debian keeps the system groups a package's scripts created (udev's) when it is
    // purged, so the rollback leaves them; asserted below.
    let groups = ["/etc/group", "/etc/group-", "/etc/gshadow", "/etc/gshadow-"];
    lifecycle_of(&lab, "iscsi-initiator", &[], true, &groups, |lab, h| {
        assert_eq!(
            lab.sh(
                h,
                "dpkg-query -W -f '${db:Status-Abbrev}' open-iscsi udev libisns0 libopeniscsiusr"
            ),
            "ii ii ii ii "
        );
        assert!(
            lab.sh(h, "iscsiadm --version")
                .starts_with("iscsiadm version")
        );
        assert!(
            lab.sh(h, "cat /etc/iscsi/initiatorname.iscsi")
                .contains("\nInitiatorName=iqn."),
        );
    });
    // h3 was rolled back; h4 was never touched: h3 has every group h4 has, plus only
    // udev's system groups.
    let names = |h: &str| -> std::collections::BTreeSet<String> {
        lab.sh(h, "cut -d: -f1 /etc/group")
            .lines()
            .map(String::from)
            .collect()
    };
    let (rolled, pristine) = (names("h3"), names("h4"));
    assert!(rolled.is_superset(&pristine));
    let extra: Vec<&String> = rolled.difference(&pristine).collect();
    assert_eq!(
        extra,
        ["input", "kvm", "render", "sgx"],
        "groups the install left behind"
    );
    // The dry-run named every package the install added, and the undo.
    let run = |extra: &[&str]| kfix_json(&lab, "run", "iscsi-initiator", extra);
    let dry = run(&["--dry-run", "--limit", "h3"]);
    let version = |p: &str| {
        let v = lab.sh(
            "h3",
            &format!("apt-cache show --no-all-versions {p} | sed -n 's/^Version: //p'"),
        );
        v.trim().to_string()
    };
    let deps = ["libisns0", "libopeniscsiusr", "udev"];
    let mut want: String = deps
        .iter()
        .map(|p| format!("+ package {p} {} (dependency)\n", version(p)))
        .collect();
    want += &format!("+ package open-iscsi {}\n", version("open-iscsi"));
    want += "  (undo: $ dpkg --purge libisns0 libopeniscsiusr udev open-iscsi)\n";
    assert_eq!(
        host(&dry, "h3")["steps"][0]["diff"],
        want.as_str(),
        "{dry:#}"
    );
    // Not a kubelet node: skipped, untouched.
    skipped(&lab, "iscsi-initiator", "h4", &[]);
    // A package apt does not know: planning fails with a hint, nothing changes.
    let before = lab.snapshot("h3");
    let doc = run(&["--yes", "--limit", "h3", "-e", "package=no-such-initiator"]);
    assert_eq!(status(&doc, "h3"), "failed", "{doc:#}");
    let reason = host(&doc, "h3")["reason"].as_str().unwrap();
    assert!(
        reason.contains("apt cannot install no-such-initiator: E: Unable to locate package")
            && reason.contains("hint: the host's apt lists must know the package"),
        "{reason}"
    );
    // A host without dpkg (another distribution): a clear refusal, not a guess.
    lab.sh("h3", "mv /usr/bin/dpkg-query /usr/bin/dpkg-query.hidden");
    let doc = run(&["--yes", "--limit", "h3"]);
    lab.sh("h3", "mv /usr/bin/dpkg-query.hidden /usr/bin/dpkg-query");
    assert_eq!(status(&doc, "h3"), "failed", "{doc:#}");
    assert!(
        host(&doc, "h3")["reason"]
            .as_str()
            .unwrap()
            .contains("package steps use apt and dpkg, and this host has no dpkg-query"),
        "{doc:#}"
    );
    assert_same(&lab.snapshot("h3"), &before, "a refused plan changed h3");
}
