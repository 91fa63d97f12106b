package control

// FakeHandler lets the external tests of the client drive a server with fixed answers.
type FakeHandler = fakeHandler
