use std::rc::Rc;

#[jobqueue::job]
async fn send(args: String) {
    let held = Rc::new(args);
    std::future::ready(()).await;
    drop(held);
}

fn main() {}
