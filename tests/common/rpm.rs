//! Small rpm packages for the lab's rpm hosts: built from a spec with the machine's
//! rpmbuild, indexed with createrepo_c (tests/lab/install-deps.sh installs both).

use std::path::Path;
use std::process::Command;

/// `iscsi-initiator-utils` as CentOS 7 ships it, in miniature: the initiator with
/// iscsiadm, requiring its iscsiuio subpackage (the real package's split), and a %post
/// that writes the node's unique initiator name as the real one does. No automatic
/// dependencies (the lab's rpm database has no packages to provide /bin/sh), so %post
/// is rpm's built-in Lua.
pub const ISCSI_INITIATOR_UTILS: &str = r#"Name: iscsi-initiator-utils
Version: 6.2.0.874
Release: 22.el7_9
Summary: iSCSI daemon and utility programs (kfix lab stand-in)
License: GPLv2+
BuildArch: noarch
AutoReqProv: no
Requires: iscsi-initiator-utils-iscsiuio = %{version}-%{release}

%description
iscsiadm for the kfix lab.

%package iscsiuio
Summary: Userspace configuration daemon required for some iSCSI hardware (kfix lab stand-in)
AutoReqProv: no

%description iscsiuio
iscsiuio for the kfix lab.

%install
mkdir -p %{buildroot}/usr/sbin %{buildroot}/etc/iscsi
printf '#!/bin/sh\necho "iscsiadm version 6.2.0.874-22"\n' > %{buildroot}/usr/sbin/iscsiadm
printf '#!/bin/sh\nexit 0\n' > %{buildroot}/usr/sbin/iscsiuio
chmod 755 %{buildroot}/usr/sbin/*

%post -p <lua>
if not posix.access("/etc/iscsi/initiatorname.iscsi") then
  local f = io.open("/etc/iscsi/initiatorname.iscsi", "w")
  f:write(string.format("InitiatorName=iqn.1994-05.com.redhat:%08x\n", math.random(0, 0x7fffffff)))
  f:close()
end

%files
%dir /etc/iscsi
%ghost /etc/iscsi/initiatorname.iscsi
/usr/sbin/iscsiadm

%files iscsiuio
/usr/sbin/iscsiuio
"#;

/// Builds the packages of `spec` under `dir` and returns a tar of the repository
/// (the rpms and createrepo_c's repodata).
pub fn build_repo(dir: &Path, spec: &str) -> Vec<u8> {
    let top = dir.join("rpmbuild");
    let repo = dir.join("rpm-repo");
    std::fs::create_dir_all(&repo).unwrap();
    let spec_path = dir.join("kfix-lab.spec");
    std::fs::write(&spec_path, spec).unwrap();
    let run = |cmd: &mut Command| {
        let out = cmd
            .output()
            .expect("rpmbuild/createrepo_c (tests/lab/install-deps.sh)");
        assert!(
            out.status.success(),
            "{cmd:?}\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    run(Command::new("rpmbuild")
        .arg("--define")
        .arg(format!("_topdir {}", top.display()))
        .arg("-bb")
        .arg(&spec_path));
    for e in std::fs::read_dir(top.join("RPMS/noarch")).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, repo.join(p.file_name().unwrap())).unwrap();
    }
    run(Command::new("createrepo_c").arg("-q").arg(&repo));
    run(Command::new("tar")
        .arg("-C")
        .arg(&repo)
        .arg("-cf")
        .arg("-")
        .arg("."))
}
