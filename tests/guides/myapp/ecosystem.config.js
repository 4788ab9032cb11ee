// The CRM backend's ecosystem file of the seeds, as the user of docs/quickstart.md and docs/migration.md has it in
// ~/src/myapp (tests/guides/run.py copies this project there). The key is a SYNTHETIC stand-in of the real
// one's shape: the point is that it is hard-coded in every env block, which the import moves into vault.
// One change from the seed: backend-dev ignores logs/ in its watch (the seed's watch: true restarts it on each line
// it logs, since its logs are in its cwd: a restart loop under PM2 itself, with or without this collection).
const ESIGN_PRIVATE_KEY = 'MIIEvQIBADANBgkqhkiG9w0BAQEFAASCYSljBmJCGwq9CWsA3j8J0y1xeFDA4m+vRWHEOqe8DYWAiJDVVXSVvONPLulScNV8htPcHAzJ5GAV9hG2pdHw5BzB1k74IHn4uezPOMYnhkcVCQoy1i8QUPtV70Ywh9fXqGBFQnF6VKqt7Deu4d/JVMrwWIrrBTOxfLi8aLCBrw83O8wAp4k6yEpRz3v6/qCOWqeOFG1CcfWRjTbzwN7iDy5Qyn2MjskH/OTsFaQgNnM+9LKgdJCn7LnbvTBzEA8rGrhQPSPLQ6MqojahyQG1VLP3K4c8C9xR8ghfP8HHA1DAVc8lLBK1DrqY13bllH7+y3IsuLTms+4vyo6V2zqC+rMUfVud/6dDd4PiiLR5wL+1fBuJKtdEpfhfJufTINZeUhCpgXm3V0rf/OtZNzcMYhAueJltu0JnAzdaq+5MytzlbQy6z/4207lyUr4eAtY5NIQ2L/yVQc20GPjysj/WDZOq/ZJkh3EW+qsplbQJKHDsr8DIrrEpSiRIyKWR/m6d0GEyjM4IfCy2JY7d4On6cYew2GnVJ62H/2Dko7m7uAPUKrPjzWOv3XT1CRYSlDePUTz3v4O/wtngcwZs1D1XS3p2S8E1HOgy+j6XSrgswAmZ3Z63+820/tJHYrZK1NEtiUX0q5LDqbJdmbqbCoHHuZ7LKtwh5GhAOkWrQPId3VPK1rRRIOChJ1NosayX+SiO9bXHILiWh1ChXyFiLu5H0rmVy55yWn3qV+EH1eQykdHZT5TLALtX16fi5qW/0YisrdnyEsZsxpmDbdWlexTkrSiS+Y6sDwaTCXVY3ed3UkjEuNLw8iBS/jICkRgSEslk4WY7MwNhxYT6+h1KuruAyf1+2QedGQ/w+JTGRb0gfY6KdfcO/9MWA1Q+diRgUhsVEFylfJl3X4w1XkezfkHTce+D5P4nd5wqFQugU+HnvMQVYI6JU6RVcVff2+tkGc/+IJ2//NUnKZRS1NmcUZ1qRgDvnUx9SSL2amRmrPybMPUntYBynH4oap7xVjO2NM3A8h2aB1lOYN0+gy+L05b2EI+cmPKIM0AOSrXZaXyexErtoyMGB97mAEJpd94iIAdExV49DdwhKU5VM4qJiG6RmwccS/V1oKWNqXidFRMmXAPcDHn9/NMtAiXwhAjPmxNDrG8fe9AbTw2Ni73CR04NYxBKL5DG2M678u2tAwV26aNXoUV010EFPUO62yaQ+X5wWPwC28bhWHXX9ybHf/SNrryCztV19TpogzzLIUXZUzSqFtkFOO1MjZkK1nEOgs7L6eesaFDzgcJ1UpVtVDfyfzB+GfnBjPg/kOeFco+Tu97ZaZsRpTC0GGPVuY5HolsGRITWklFMC6ZeHvd6stlQY7h+ZDrAoKZO8XUwl42hYUIpYreiJeQPA1CPoTAsyLZu9sjbdGbDJIUzUAHvDp2NSkqUubhrYr/4Zx67Prv4PqeZtZc2fT4yTIo+tDmcdGq1Z68awLv12swTxr2nM8cuIDeRmEl1MOaOJASLJLk7iFFrGswShG1fbbnkwGMJOjZeTDnzXmNEAStfqrp/UM93gkdpSMUdBzRz1/UtBA==';
module.exports = {
  apps: [
    {
      name: 'backend-dev', script: 'dist/main.js', watch: true, ignore_watch: ['logs', 'node_modules'],
      env: { NODE_ENV: 'development', PORT: 3001, ESIGN_APP_ID: '141496759', ESIGN_HOST: 'https://prev.asign.cn', ESIGN_PRIVATE_KEY },
      env_development: { NODE_ENV: 'development', PORT: 3001, ESIGN_APP_ID: '141496759', ESIGN_HOST: 'https://prev.asign.cn', ESIGN_PRIVATE_KEY },
      max_memory_restart: '300M', log_date_format: 'YYYY-MM-DD HH:mm:ss',
      error_file: 'logs/backend-dev-error.log', out_file: 'logs/backend-dev-out.log',
      merge_logs: true, instances: 1, exec_mode: 'fork', env_file: '.env'
    },
    {
      name: 'backend-prod', script: 'dist/main.js',
      env: { NODE_ENV: 'production', PORT: 3000, ESIGN_APP_ID: '141496759', ESIGN_HOST: 'https://prev.asign.cn', ESIGN_PRIVATE_KEY },
      env_production: { NODE_ENV: 'production', PORT: 3000, ESIGN_APP_ID: '141496759', ESIGN_HOST: 'https://prev.asign.cn', ESIGN_PRIVATE_KEY },
      max_memory_restart: '300M', log_date_format: 'YYYY-MM-DD HH:mm:ss',
      error_file: 'logs/backend-prod-error.log', out_file: 'logs/backend-prod-out.log',
      merge_logs: true, instances: 1, exec_mode: 'fork', env_file: '.env'
    }
  ]
};
