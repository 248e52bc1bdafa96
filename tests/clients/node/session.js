// One node-postgres session held across a switchover: the proxy test drives it over stdin.
// Each line on stdin runs the same named prepared statement and prints "port application_name".
// Arguments: port user [tls]. The password comes from PGPASSWORD.
const { Client } = require('pg');
const readline = require('readline');

async function main() {
  const [port, user, tls] = process.argv.slice(2);
  const client = new Client({
    host: '127.0.0.1',
    port: Number(port),
    user,
    password: process.env.PGPASSWORD,
    database: 'postgres',
    // sslmode=require: encrypted, the certificate not checked (the proxy's own is self-signed).
    ssl: tls === 'tls' ? { rejectUnauthorized: false } : false,
  });
  await client.connect();
  await client.query("set application_name = 'node-moved'");
  const query = { name: 'where', text: "select inet_server_port() as port, current_setting('application_name') as app, (select ssl from pg_stat_ssl where pid = pg_backend_pid()) as ssl" };
  const lines = readline.createInterface({ input: process.stdin });
  for await (const line of lines) {
    if (line === 'quit') break;
    const { rows } = await client.query(query);
    console.log(`${rows[0].port} ${rows[0].app}`);
  }
  lines.close();
  await client.end();
}

main().then(() => process.exit(0), (error) => {
  console.error(`${error.code ?? ''} ${error.message}`);
  process.exit(1);
});
