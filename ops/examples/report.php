<?php
// Reads every published view of buildmaster through PDO as a reader login,
// checks the PHP types of what comes back, and prints a small report.
//
// Connection: the usual libpq environment variables (PGHOST, PGPORT,
// PGDATABASE, PGUSER, PGPASSWORD), or BUILDMASTER_DSN with a full PDO DSN.
//
//   PGHOST=127.0.0.1 PGUSER=grafana PGPASSWORD=... PGDATABASE=buildmaster php report.php
//
// Exit status: 0 when every check passed, 1 otherwise (the problems are
// printed). Needs php-cli and php-pgsql (Debian: apt-get install php-cli php-pgsql).

declare(strict_types=1);

function dsn(): string {
    $dsn = getenv('BUILDMASTER_DSN');
    if ($dsn !== false && $dsn !== '') {
        return $dsn;
    }
    $parts = [];
    foreach (['host' => 'PGHOST', 'port' => 'PGPORT', 'dbname' => 'PGDATABASE'] as $key => $env) {
        $value = getenv($env);
        if ($value !== false && $value !== '') {
            $parts[] = "$key=$value";
        }
    }
    return 'pgsql:' . implode(';', $parts);
}

$pdo = new PDO(dsn(), getenv('PGUSER') ?: null, getenv('PGPASSWORD') ?: null, [
    PDO::ATTR_ERRMODE => PDO::ERRMODE_EXCEPTION,
    PDO::ATTR_DEFAULT_FETCH_MODE => PDO::FETCH_ASSOC,
]);

$problems = [];
$views = $pdo->query(
    "SELECT table_name FROM information_schema.views
      WHERE table_schema = 'buildmaster_v1' ORDER BY table_name"
)->fetchAll(PDO::FETCH_COLUMN);
if (count($views) === 0) {
    $problems[] = 'no view of buildmaster_v1 is visible to this login';
}

// What each PostgreSQL type must look like in PHP.
function check_value(string $type, $value): ?string {
    if ($value === null) {
        return null;
    }
    switch ($type) {
        case 'int2': case 'int4': case 'int8':
            return is_int($value) ? null : 'expected an int, got ' . gettype($value);
        case 'bool':
            return is_bool($value) ? null : 'expected a bool, got ' . gettype($value);
        case 'float8': case 'float4': case 'numeric':
            return is_numeric($value) ? null : 'expected a number, got ' . var_export($value, true);
        case 'timestamptz':
            try {
                $t = new DateTimeImmutable($value);
                return $t->getOffset() === 0 ? null : "time not in UTC: $value";
            } catch (Exception $e) {
                return "not a time: $value";
            }
        case 'jsonb': case 'json':
            json_decode($value);
            return json_last_error() === JSON_ERROR_NONE ? null : "not JSON: $value";
        case 'text': case 'varchar':
            return is_string($value) ? null : 'expected a string, got ' . gettype($value);
        default:
            return "type $type is not part of the contract's type rules";
    }
}

$report = [];
foreach ($views as $view) {
    $stmt = $pdo->query("SELECT * FROM buildmaster_v1.\"$view\" LIMIT 200");
    $types = [];
    for ($i = 0; $i < $stmt->columnCount(); $i++) {
        $meta = $stmt->getColumnMeta($i);
        $types[$meta['name']] = $meta['native_type'];
    }
    $rows = $stmt->fetchAll();
    foreach ($rows as $row) {
        foreach ($row as $column => $value) {
            $problem = check_value($types[$column], $value);
            if ($problem !== null) {
                $problems[] = "$view.$column: $problem";
            }
        }
    }
    $report[] = [$view, count($rows), count($types)];
}

printf("%-22s %6s %8s\n", 'view', 'rows', 'columns');
foreach ($report as [$view, $rows, $columns]) {
    printf("%-22s %6d %8d\n", $view, $rows, $columns);
}

// A typical dashboard query: the latest result of every builder.
echo "\nbuilder status\n";
foreach ($pdo->query(
    'SELECT builder_name, last_build_number, last_results_name, last_started_at, pending_requests
       FROM buildmaster_v1.builder_status ORDER BY builder_name'
) as $row) {
    printf("  %-12s #%-4s %-10s %-26s pending %d\n",
        $row['builder_name'],
        $row['last_build_number'] ?? '-',
        $row['last_results_name'] ?? ($row['last_build_number'] === null ? 'never' : 'running'),
        $row['last_started_at'] ?? '',
        $row['pending_requests']);
}

$unique = array_values(array_unique($problems));
if (count($unique) > 0) {
    fwrite(STDERR, "\n" . count($unique) . " problems:\n  " . implode("\n  ", array_slice($unique, 0, 50)) . "\n");
    exit(1);
}
echo "\nall values have the types the contract promises\n";
