// Request / response: a server process answers the requests of 3 client processes through one
// Service; every reply reaches the request it answers.
//
//   swift run --package-path Examples request-response
//
// This process is the server: it squares numbers. Each client sends 200 requests from 4 tasks at
// once, so requests of all clients are in flight together, and checks that every reply is the
// answer to its own request (its pid and its number, squared).
import Foundation
import Interprocess

let clientCount = 3
let tasksPerClient = 4
let requestsPerTask = 50

struct Request: Codable, Sendable { var client: Int32; var number: Int }                 // JSON
struct Response: Codable, Sendable { var client: Int32; var number: Int; var square: Int }

/// Starts this same program again with `arguments`: the peer process.
func startPeer(_ arguments: String...) throws -> Process {
    let peer = Process()
    peer.executableURL = Bundle.main.executableURL
    peer.arguments = arguments
    fflush(nil)                           // what this process printed so far comes first
    try peer.run()
    return peer
}

if CommandLine.arguments.count == 3, CommandLine.arguments[1] == "client" {
    let squares = try Service<Request, Response>.open(name: CommandLine.arguments[2])
    let me = getpid()
    let wrongReplies = try await withThrowingTaskGroup(of: Int.self) { group in
        for task in 0..<tasksPerClient {
            group.addTask {
                var wrong = 0
                for index in 0..<requestsPerTask {
                    let number = task * 1_000 + index
                    let reply = try await squares.request(Request(client: me, number: number), timeout: .seconds(30))
                    if reply.client != me || reply.number != number || reply.square != number * number { wrong += 1 }
                }
                return wrong
            }
        }
        var total = 0
        for try await wrong in group { total += wrong }
        return total
    }
    squares.detach()
    print("client (pid \(me)): \(tasksPerClient * requestsPerTask) replies, \(wrongReplies) not its own")
    exit(wrongReplies == 0 ? 0 : 1)
}

let name = "example-request-response-\(getpid())"
let squares = try Service<Request, Response>.create(name: name, capacity: 8)   // 8 requests in flight at most
let clients = try (0..<clientCount).map { _ in try startPeer("client", name) }

// Serve on a task of its own while this thread waits for the clients to exit.
let server = Task.detached { [squares] in
    var answered: [Int32: Int] = [:]
    try await squares.serve { request in                // until the service is closed and drained
        answered[request.client, default: 0] += 1
        return Response(client: request.client, number: request.number, square: request.number * request.number)
    }
    return answered
}
for client in clients { client.waitUntilExit() }
squares.close()                                         // for everyone: serve returns
let answered = try await server.value
for (client, count) in answered.sorted(by: { $0.key < $1.key }) { print("server (pid \(getpid())): \(count) requests from client \(client)") }
squares.detach()                                        // the last holder removes the service
let allRight = clients.allSatisfy { $0.terminationStatus == 0 }
    && answered.values.reduce(0, +) == clientCount * tasksPerClient * requestsPerTask
print(allRight ? "ok: \(clientCount) clients, \(tasksPerClient * requestsPerTask) requests each, every reply its own" : "FAILED")
exit(allRight ? 0 : 1)
