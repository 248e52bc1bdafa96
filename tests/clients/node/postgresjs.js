// postgres.js held across a switchover: the proxy test drives it over stdin. postgres.js prepares
// every query as a named statement by default, pipelines queries on one connection, and keeps
// LISTEN on a connection of its own. Each "run" line sends three queries at once on the one
// query connection, then a NOTIFY that the listening connection must receive, and prints
// "port notified". Arguments: port user. The password comes from PGPASSWORD.
const postgres = require('postgres');
const readline = require('readline');

async function main() {
  const [port, user] = process.argv.slice(2);
  const sql = postgres({
    host: '127.0.0.1',
    port: Number(port),
    user,
    pass: process.env.PGPASSWORD,
    database: 'postgres',
    ssl: false,
    max: 1, // one query connection: the three queries of a run are pipelined on it
    idle_timeout: 0,
    max_lifetime: 0,
    onnotice: () => {},
  });
  let heard = null;
  await sql.listen('teal_moved', (payload) => { if (heard) heard(payload); });
  const lines = readline.createInterface({ input: process.stdin });
  let n = 0;
  for await (const line of lines) {
    if (line === 'quit') break;
    n++;
    const [a, b, c] = await Promise.all([
      sql`select inet_server_port() as port, ${n}::int as n`,
      sql`select ${'two'}::text as two`,
      sql`select current_setting('application_name') as app`,
    ]);
    if (a[0].n !== n || b[0].two !== 'two') throw new Error(`wrong answers: ${JSON.stringify([a, b, c])}`);
    const notified = new Promise((resolve, reject) => {
      heard = resolve;
      setTimeout(() => reject(new Error('no notification within 10 s')), 10000).unref();
    });
    await sql`select pg_notify('teal_moved', ${String(n)})`;
    const payload = await notified;
    console.log(`${a[0].port} ${payload === String(n) ? 'notified' : `notified ${payload}`}`);
  }
  lines.close();
  await sql.end({ timeout: 5 });
}

main().then(() => process.exit(0), (error) => {
  console.error(`${error.code ?? ''} ${error.message}`);
  process.exit(1);
});
