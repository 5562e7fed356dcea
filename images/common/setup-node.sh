#!/bin/sh
# Setup shared by every node image, run once by each role's Containerfile (no network): service
# accounts and users with fixed ids, munge and Slurm paths with the owners and modes a Rocky node has,
# the rest of the Rocky persona, and the simulated cluster tools from stubs/.
set -eu

# Fixed ids so that every node agrees on who owns what (a real cluster gets this from its provisioner).
groupadd --system --gid 981 munge
useradd --system --uid 981 --gid munge --home-dir /var/lib/munge --no-create-home \
    --shell /sbin/nologin --comment "Runs Uid 'N' Gid Emporium" munge
groupadd --system --gid 982 slurm
useradd --system --uid 982 --gid slurm --home-dir /var/lib/slurm --no-create-home \
    --shell /sbin/nologin --comment "SLURM resource manager" slurm
# MariaDB's account, for the accounting database on the login node (Rocky gives it 27, Debian's sudo group).
groupadd --system --gid 983 mysql
useradd --system --uid 983 --gid mysql --home-dir /var/lib/mysql --no-create-home \
    --shell /sbin/nologin --comment "MySQL Server" mysql
for account in alice:2001 bob:2002 carol:2003; do
    name=${account%%:*}; id=${account##*:}
    groupadd --gid "$id" "$name"
    useradd --uid "$id" --gid "$id" --create-home --shell /bin/bash "$name"
    chmod 0700 "/home/$name"  # as on Rocky (HOME_MODE 0700)
done
# A licensed application's group: only its members may read its tree under /apps.
groupadd --gid 3001 ansys-users
usermod -aG ansys-users carol

# munged refuses to start unless its key and directories are private to the munge user.
install -d -o munge -g munge -m 0700 /etc/munge /var/lib/munge /var/log/munge
chown munge:munge /etc/munge/munge.key
chmod 0400 /etc/munge/munge.key

install -d -o root -g root -m 0755 /etc/slurm /var/spool/slurmd /apps
install -d -o slurm -g slurm -m 0755 /var/log/slurm
chmod 0644 /etc/slurm/slurm.conf
chmod 0440 /etc/sudoers  # as sudo's package installs it; sudo refuses a writable one

# Rocky keeps its release files under one name and links the generic ones to it.
ln -sfn rocky-release /etc/redhat-release
ln -sfn rocky-release /etc/system-release
ln -sfn ../usr/lib/os-release /etc/os-release
ln -sfn ../proc/self/mounts /etc/mtab
rm -f /etc/debian_version

# Every simulated tool is a hard link to the one client (the native binary), root-owned and 0755; the
# Python client it matches stays beside it, for comparison.
chown root:root /usr/libexec/hpcgym/hpcgym-client /usr/libexec/hpcgym/hpcgym-client.py
chmod 0755 /usr/libexec/hpcgym/hpcgym-client /usr/libexec/hpcgym/hpcgym-client.py
grep -v '^#' /usr/libexec/hpcgym/tools.list | while read -r tool; do
    [ -n "$tool" ] || continue
    install -d -m 0755 "$(dirname "$tool")"
    ln -f /usr/libexec/hpcgym/hpcgym-client "$tool"
done

# PID 1 of every node is hpcgym's init (stubs/hpcgym-init.c), at systemd's path, which the runtime runs
# with systemd's argv (runtime/init.py); /sbin/init leads there as on Rocky.
install -d -m 0755 /usr/lib/systemd
mv /usr/libexec/hpcgym/hpcgym-init /usr/lib/systemd/systemd
chown root:root /usr/lib/systemd/systemd
chmod 0755 /usr/lib/systemd/systemd
ln -sfn ../lib/systemd/systemd /usr/sbin/init

# What a running daemon looks like inside a node: the init binary under the daemon's name, asleep
# until a signal ends it (stubs/hpcgym-init.c), so ps, pgrep and pidof see munged/slurmd/... at a few
# pages each. The controller decides when one starts and notices when one is killed.
install -d -m 0755 /usr/libexec/hpcgym/daemons
for daemon in munged slurmd slurmctld httpd chronyd slurmdbd mariadbd; do
    ln -f /usr/lib/systemd/systemd "/usr/libexec/hpcgym/daemons/$daemon"
done

# The site's numerical libraries, as the Rocky packages lay them out (controller/services/packages.py
# keeps their rpmdb): the versioned shared object and its soname link. Their bytes only stand in for
# the real ones; what matters is that every node's copy equals the package's.
install -d -m 0755 /usr/lib64 /etc/yum.repos.d
for lib in libfftw3.so.3:libfftw3.so.3.5.8 libgsl.so.25:libgsl.so.25.0.0 \
    libopenblaso.so.0:libopenblaso-r0.3.21.so; do
    soname=${lib%%:*}; file=${lib##*:}
    { printf '\177ELF\002\001\001\000'; head -c 16376 /dev/zero; printf '%s\n' "$soname"; } > "/usr/lib64/$file"
    chmod 0755 "/usr/lib64/$file"
    ln -sfn "$file" "/usr/lib64/$soname"
done
cat > /etc/yum.repos.d/site-appstream.repo <<'EOF'
[site-appstream]
name=Site AppStream mirror (login01:/apps/repo)
baseurl=file:///apps/repo/rocky9/AppStream/x86_64/os/
enabled=1
gpgcheck=1
gpgkey=file:///etc/pki/rpm-gpg/RPM-GPG-KEY-Rocky-9
EOF
