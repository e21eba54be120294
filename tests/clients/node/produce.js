'use strict'
// Produces args.messages (key/value strings or null, headers, timestamp, partition) with
// args.compression ("none" | "gzip") and acks=-1; prints the per-partition send results.
const { CompressionTypes } = require('kafkajs')
const { run, client } = require('./common')

run(async (args) => {
  const producer = client(args).producer({ allowAutoTopicCreation: false, idempotent: !!args.idempotent, maxInFlightRequests: args.idempotent ? 1 : undefined })
  await producer.connect()
  try {
    const results = []
    for (const batch of args.batches) {
      results.push(await producer.send({
        topic: args.topic,
        acks: -1,
        timeout: 10000,
        compression: args.compression === 'gzip' ? CompressionTypes.GZIP : CompressionTypes.None,
        messages: batch.map((m) => ({
          key: m.key === null ? null : Buffer.from(m.key, 'utf8'),
          value: m.value === null ? null : Buffer.from(m.value, 'utf8'),
          headers: m.headers,
          timestamp: m.timestamp === undefined ? undefined : String(m.timestamp),
          partition: m.partition
        }))
      }))
    }
    return { results }
  } finally {
    await producer.disconnect()
  }
})
