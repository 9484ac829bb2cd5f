/**
 * The embedded demo configuration used when no --config is given. The bank
 * codes are the usual short codes of real Chinese participant banks; the
 * institutions are fictional. Every token here is a DEMO token, printed at
 * start, and must never be used outside a local trial; the metrics one is
 * also written in grafana/prometheus.yml, so the shipped Prometheus can
 * scrape a demo engine.
 */

import type { RawConfig } from './config.js';

export const DEMO_CONFIG: RawConfig = {
  listen: { host: '127.0.0.1', port: 8080 },
  dataDir: './data',
  banks: [
    { code: 'ICBC', name: 'Industrial and Commercial Bank of China', debitCapCents: 50_000_000_000_000 },
    { code: 'ABC', name: 'Agricultural Bank of China', debitCapCents: 40_000_000_000_000 },
    { code: 'BOC', name: 'Bank of China', debitCapCents: 40_000_000_000_000 },
    { code: 'CCB', name: 'China Construction Bank', debitCapCents: 40_000_000_000_000 },
    { code: 'BOCOM', name: 'Bank of Communications', debitCapCents: 20_000_000_000_000 },
    { code: 'PSBC', name: 'Postal Savings Bank of China', debitCapCents: 20_000_000_000_000 },
    { code: 'CMB', name: 'China Merchants Bank', debitCapCents: 20_000_000_000_000 },
    { code: 'CITIC', name: 'China CITIC Bank', debitCapCents: 10_000_000_000_000 },
    { code: 'SPDB', name: 'Shanghai Pudong Development Bank', debitCapCents: 10_000_000_000_000 },
    { code: 'CIB', name: 'Industrial Bank', debitCapCents: 10_000_000_000_000 },
    { code: 'CMBC', name: 'China Minsheng Bank', debitCapCents: 10_000_000_000_000 },
    { code: 'CEB', name: 'China Everbright Bank', debitCapCents: 10_000_000_000_000 },
    { code: 'HXB', name: 'Hua Xia Bank', debitCapCents: 5_000_000_000_000 },
    { code: 'PAB', name: 'Ping An Bank', debitCapCents: 10_000_000_000_000 },
  ],
  principals: [
    { token: 'demo-institution-PI0001-not-secret', role: 'institution', id: 'PI0001' },
    { token: 'demo-institution-PI0002-not-secret', role: 'institution', id: 'PI0002' },
    { token: 'demo-institution-PI0003-not-secret', role: 'institution', id: 'PI0003' },
    { token: 'demo-bank-ICBC-not-secret', role: 'bank', id: 'ICBC' },
    { token: 'demo-bank-CMB-not-secret', role: 'bank', id: 'CMB' },
    { token: 'demo-operator-ops-not-secret', role: 'operator', id: 'ops' },
    // DEMO metrics token: grafana/prometheus.yml sends it when scraping GET /metrics. Never use it outside a local trial.
    { token: 'demo-metrics-prometheus-not-secret', role: 'metrics', id: 'prometheus' },
  ],
  // As by default: an agreement or entrusted payment is held to a mandate only when it names one. Three ship with the demo (README: a mandate signed, used and revoked).
  requireMandates: false,
  mandates: [
    { institution: 'PI0001', id: 'M-PI0001-ICBC', kind: 'agreement', payer: 'ICBC', account: 'demo-account-0001' },
    { institution: 'PI0001', id: 'M-PI0001-CMB', kind: 'entrusted', payer: 'CMB', account: 'demo-account-0002', perPaymentMaxCents: 5_000_000 },
    { institution: 'PI0002', id: 'M-PI0002-ICBC', kind: 'agreement', payer: 'ICBC', account: 'demo-account-0003' },
  ],
  snapshotIntervalMs: 1000,
  shards: 2,
  workers: 2,
};
