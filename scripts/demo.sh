#!/usr/bin/env bash
# The demo: builds Vigil, starts a throwaway PostgreSQL 15, runs the agent on the embedded
# local store with an enforcement proxy in front of the server, drives a short workload
# (psql and a Go pgx client, plaintext, TLS and Unix socket, direct and through the proxy),
# and shows what was captured, blocked, masked and held for an approval. Everything lives in a temp dir that is
# removed at the end. Run as root on Debian: `make demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=$PATH:/usr/local/go/bin

[[ $EUID -eq 0 ]] || { echo "the demo loads eBPF programs and starts PostgreSQL as the postgres user: run it as root" >&2; exit 1; }
scripts/deps.sh
make -s build

work=$(mktemp -d /tmp/vigil-demo.XXXXXX)
chmod 755 "$work"
pgbin=/usr/lib/postgresql/15/bin
pgport=$(( 20000 + RANDOM % 20000 ))
proxyport=$(( pgport + 1 ))
agent_pid=""
cgroot=$(awk '$3 == "cgroup2" {print $2; exit}' /proc/mounts)
demo_cgroup=/vigil-demo-$$
cleanup() {
  [[ -n $agent_pid ]] && kill "$agent_pid" 2>/dev/null && wait "$agent_pid" 2>/dev/null || true
  [[ -n $cgroot ]] && rmdir "$cgroot$demo_cgroup" 2>/dev/null || true
  bin/vigil unpin --state-dir "$work/state" >/dev/null 2>&1 || true  # capture kept across restarts
  runuser -u postgres -- "$pgbin/pg_ctl" -D "$work/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "starting a throwaway PostgreSQL 15 on 127.0.0.1:$pgport (TLS on, socket in $work)"
chown postgres "$work"
runuser -u postgres -- "$pgbin/initdb" -D "$work/data" -U postgres -A trust --no-sync >/dev/null
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=localhost \
  -keyout "$work/data/server.key" -out "$work/data/server.crt" 2>/dev/null
chown postgres "$work/data/server.key" "$work/data/server.crt"; chmod 600 "$work/data/server.key"
cat >>"$work/data/postgresql.conf" <<CONF
port = $pgport
listen_addresses = '127.0.0.1'
unix_socket_directories = '$work'
ssl = on
fsync = off
CONF
runuser -u postgres -- "$pgbin/pg_ctl" -D "$work/data" -l "$work/pg.log" -w start >/dev/null

psql_() { psql -X -q -h "$1" -p "$2" -U postgres -d postgres "${@:3}"; }
psql_ "$work" "$pgport" -c "CREATE TABLE customers (id int PRIMARY KEY, name text, email text, card text);
  INSERT INTO customers VALUES (1, 'Ada', 'ada@example.com', '4111 1111 1111 1111'), (2, 'Linus', 'linus@example.org', '5500 0000 0000 0004');
  CREATE ROLE app LOGIN;
  GRANT ALL ON customers TO app;"

# The default policy, its approval rule holding statements for 30s instead of refusing them at
# once; the control socket open to the nogroup group, for an approver who is not root; capture
# of this server only (other PostgreSQL servers on the host stay out of the demo's trail).
bin/vigil policy default | sed 's/^    action: require_approval$/&\n    approval: {hold: 30s}/' >"$work/policy.yaml"
grep -q 'approval: {hold: 30s}' "$work/policy.yaml" || { echo "the default policy has no require_approval rule to hold with" >&2; exit 1; }
# A "batch job" cgroup whose processes the kernel steers into the proxy, their connection
# strings unchanged.
[[ -n $cgroot ]] || { echo "no cgroup v2 hierarchy mounted: the demo's steering step needs one" >&2; exit 1; }
mkdir -p "$cgroot$demo_cgroup"
printf 'capture:\n  discover: false\n  servers: [{ports: [%d]}]\napprovals:\n  socket_group: nogroup\nsteer:\n  - {name: batch-jobs, cgroup: %s}\n' "$pgport" "$demo_cgroup" >"$work/vigil.yaml"
install -d -m 0711 "$work/state"
install -m 0755 bin/vigil "$work/vigil"  # for the approver, who may not reach the repository

step "starting the agent: vigil run --store local:$work/events --proxy 127.0.0.1:$proxyport=127.0.0.1:$pgport"
bin/vigil run --config "$work/vigil.yaml" --policy "$work/policy.yaml" --store "local:$work/events" \
  --state-dir "$work/state" --metrics 127.0.0.1:0 \
  --metrics-file "$work/metrics-addr" --proxy "127.0.0.1:$proxyport=127.0.0.1:$pgport" \
  --log-format text >"$work/agent.log" 2>&1 &
agent_pid=$!
for _ in $(seq 100); do [[ -s $work/metrics-addr ]] && curl -sf "http://$(cat "$work/metrics-addr")/readyz" >/dev/null && break; sleep 0.1; done
curl -sf "http://$(cat "$work/metrics-addr")/readyz" >/dev/null || { cat "$work/agent.log"; echo "agent not ready" >&2; exit 1; }
echo "ready: $(curl -s "http://$(cat "$work/metrics-addr")/readyz")"

step "workload: psql over TCP, over TLS and over the Unix socket; a Go pgx client (extended protocol)"
PGSSLMODE=disable psql_ 127.0.0.1 "$pgport" -c "SELECT name FROM customers WHERE id = 1" >/dev/null
PGSSLMODE=require psql_ 127.0.0.1 "$pgport" -c "UPDATE customers SET name = 'Ada L.' WHERE id = 1" >/dev/null
psql_ "$work" "$pgport" -c "SELECT count(*) FROM customers; SELECT now()" >/dev/null
go run ./scripts/democlient "postgres://app@127.0.0.1:$pgport/postgres?sslmode=disable"

step "through the enforcement proxy (default policy): a DROP and a DELETE without WHERE are refused"
PGSSLMODE=disable psql_ 127.0.0.1 "$proxyport" -c "DROP TABLE customers" || true
PGSSLMODE=disable psql_ 127.0.0.1 "$proxyport" -c "DELETE FROM customers WHERE 1=1" || true
step "a flagged workload (cgroup $demo_cgroup) dials the server itself, 127.0.0.1:$pgport: the kernel steers it into the proxy"
( echo "$BASHPID" >"$cgroot$demo_cgroup/cgroup.procs" && PGSSLMODE=disable exec psql -X -q -h 127.0.0.1 -p "$pgport" -U postgres -d postgres -c "DROP TABLE customers" ) || true
echo "customers still there: $(psql_ "$work" "$pgport" -Atc "SELECT count(*) FROM customers") rows"

step "through the proxy, PII leaves masked"
PGSSLMODE=disable psql_ 127.0.0.1 "$proxyport" -c "SELECT id, name, email, card FROM customers ORDER BY id"

step "through the proxy, a DROP COLUMN is held for an approval (rule schema-and-privilege-changes)"
held="ALTER TABLE customers DROP COLUMN card"
echo "psql -c \"$held\" (in the background, as root)"
PGSSLMODE=disable psql_ 127.0.0.1 "$proxyport" -c "$held" >"$work/held.out" 2>&1 &
held_pid=$!
id=""
for _ in $(seq 100); do
  id=$(bin/vigil approvals list --json --state-dir "$work/state" | jq -r --arg s "$held" 'select(.status == "pending" and .statement == $s) | .id' | head -1)
  [[ -n $id ]] && break; sleep 0.1
done
[[ -n $id ]] || { cat "$work/held.out" "$work/agent.log"; echo "no approval request for the held statement" >&2; exit 1; }
echo "\$ vigil approvals list"
bin/vigil approvals list --state-dir "$work/state"
echo "\$ vigil approvals approve $id    # as root, who sent it: refused"
bin/vigil approvals approve "$id" --state-dir "$work/state" || true
echo "\$ runuser -u nobody -- vigil approvals approve $id --reason 'card numbers move to the vault'"
runuser -u nobody -- "$work/vigil" approvals approve "$id" --reason "card numbers move to the vault" --state-dir "$work/state"
wait "$held_pid"
echo "psql, once approved:"; cat "$work/held.out"
echo "customers' columns now: $(psql_ "$work" "$pgport" -Atc "SELECT string_agg(attname, ', ' ORDER BY attnum) FROM pg_attribute WHERE attrelid = 'customers'::regclass AND attnum > 0 AND NOT attisdropped")"

sleep 1
kill "$agent_pid"; wait "$agent_pid" || true; agent_pid=""

step "what the agent recorded: vigil events --store local:$work/events"
bin/vigil events --store "local:$work/events"
step "the trail verifies: vigil verify"
bin/vigil verify --store "local:$work/events" --state-dir "$work/state"
step "one event in full: vigil events --json --limit 1 --kind UPDATE"
bin/vigil events --store "local:$work/events" --json --kind UPDATE --limit 1

step "what Vigil guarantees about this trail"
cat <<'NOTES'
- Every statement captured or proxied is an event, or a gap event says what was lost and where;
  `vigil verify` reports gaps as recorded loss and anything else missing as a hole.
- A full disk: /readyz goes 503 (component "trail") with what to do, vigil_store_disk_full is 1,
  memory stays bounded, and the events let go keep their seqs and are named by one gap event
  once space returns (or at a stop while still full); the signed head covers it.
- A bug met by one connection closes that connection only: a proxied session gets FATAL XX000
  and a "fault" event, a captured one a gap event; the agent and other sessions go on.
- A held statement runs only under a grant signed with the agent's key and bound to the
  requester, the database and the exact statement; nobody approves their own; each step
  (requested, refused, approved, executed) is an approval event in the trail.
- A clean stop ships everything to ClickHouse within export.shutdown_timeout and says what it
  could not ship.
- An agent restart (a rolling update, even kill -9) is no blind window: capture stays pinned in
  the kernel and the next agent reads what it captured meanwhile; what it still cannot see (the
  dead agent's unstored last second, a ring overflow, a reboot) is a gap event with its time
  range, which verify reports as recorded loss. TLS and Unix-socket sessions are not captured
  while no agent runs.
- Each state directory writes a chain of its own (chain_id, opened by a chain event): a fresh
  state directory under an existing agent_id is a new chain beside the old one, in the local
  store and in ClickHouse alike, and verify checks every chain against its own key and head.
- Flagged workloads are steered by the kernel, with no change to their clients; their events
  say steered and by which flag. With steer_fail: closed they are refused while no agent runs.
NOTES
