'use strict'
// A kafkajs consumer in group args.groupId (kafkajs has no group-less consumer): subscribes to
// args.topic from the beginning, reads args.count messages, commits, and prints them.
const { run, client, bytes, headers } = require('./common')

run(async (args) => {
  const kafka = client(args)
  const consumer = kafka.consumer({
    groupId: args.groupId,
    sessionTimeout: 10000,
    rebalanceTimeout: 10000,
    heartbeatInterval: 500,
    maxWaitTimeInMs: 200,
    retry: { retries: 2, initialRetryTime: 100 }
  })
  const got = []
  await consumer.connect()
  try {
    await consumer.subscribe({ topics: [args.topic], fromBeginning: true })
    await new Promise((resolve, reject) => {
      consumer.on(consumer.events.CRASH, (e) => reject(e.payload.error))
      consumer.run({
        autoCommit: true,
        eachMessage: async ({ partition, message }) => {
          got.push({
            partition,
            offset: Number(message.offset),
            key: bytes(message.key),
            value: bytes(message.value),
            headers: headers(message.headers),
            timestamp: Number(message.timestamp)
          })
          if (got.length >= args.count) resolve()
        }
      }).catch(reject)
    })
  } finally {
    await consumer.disconnect()
  }
  const admin = kafka.admin()
  await admin.connect()
  try {
    const committed = await admin.fetchOffsets({ groupId: args.groupId, topics: [args.topic] })
    return { messages: got, committed }
  } finally {
    await admin.disconnect()
  }
})
