// A job pool: 3 worker processes take 1,000 jobs from one Channel; each job is done exactly once.
//
//   swift run --package-path Examples job-pool
//
// This process sends the jobs into `jobs` and closes it; each worker receives jobs until the channel
// is closed and drained, and sends a result per job into `results`. A channel gives each message to
// exactly one receiver, so no job is done twice and none is lost.
import Foundation
import Interprocess

let workerCount = 3
let jobCount = 1_000

struct Job: Codable, Sendable { var id: Int; var text: String }          // travels as JSON
struct Done: Codable, Sendable { var job: Int; var worker: Int32; var length: Int }

/// Starts this same program again with `arguments`: the peer process.
func startPeer(_ arguments: String...) throws -> Process {
    let peer = Process()
    peer.executableURL = Bundle.main.executableURL
    peer.arguments = arguments
    fflush(nil)                           // what this process printed so far comes first
    try peer.run()
    return peer
}

if CommandLine.arguments.count == 3, CommandLine.arguments[1] == "worker" {
    let prefix = CommandLine.arguments[2]
    let jobs = try Channel<Job>.open(name: prefix + "-jobs")
    let results = try Channel<Done>.open(name: prefix + "-results")
    for try await job in jobs.messages {                 // ends when the channel is closed and drained
        try await results.send(Done(job: job.id, worker: getpid(), length: job.text.count))
    }
    exit(0)
}

let prefix = "example-job-pool-\(getpid())"
let jobs = try Channel<Job>.create(name: prefix + "-jobs", capacity: 64)
let results = try Channel<Done>.create(name: prefix + "-results", capacity: 64)
let workers = try (0..<workerCount).map { _ in try startPeer("worker", prefix) }

// Send in one task while this one collects the results: with both channels bounded, sending all
// jobs first could wait forever for workers that wait for room in `results`.
let sender = Task {
    for id in 0..<jobCount { try await jobs.send(Job(id: id, text: String(repeating: "x", count: id % 50))) }
    jobs.close()                                         // for everyone: workers end once it is drained
}
var timesDone = [Int](repeating: 0, count: jobCount)
var perWorker: [Int32: Int] = [:]
for _ in 0..<jobCount {
    let done = try await results.receive(timeout: .seconds(30))
    guard timesDone.indices.contains(done.job) else { fatalError("no job \(done.job)") }  // never trust a peer
    timesDone[done.job] += 1
    perWorker[done.worker, default: 0] += 1
}
try await sender.value
for worker in workers { worker.waitUntilExit() }

for (worker, count) in perWorker.sorted(by: { $0.key < $1.key }) { print("worker \(worker): \(count) jobs") }
let exactlyOnce = timesDone.allSatisfy { $0 == 1 }
jobs.detach()                                            // the last holder removes the channel
results.detach()
print(exactlyOnce ? "ok: \(jobCount) jobs, each done exactly once by \(perWorker.count) workers" : "FAILED")
exit(exactlyOnce ? 0 : 1)
